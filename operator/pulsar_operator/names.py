"""The operator's names in the cluster: the API group, the kind, the labels and annotations it
reads and writes, and who it writes as. One place, so a label is never spelt twice."""

from __future__ import annotations

GROUP = "forecasting.pulsar.dev"
VERSION = "v1alpha1"
PLURAL = "surgemodels"
KIND = "SurgeModel"
MANAGER = "pulsar-operator"  # app.kubernetes.io/managed-by of children, and the field manager

MODEL_LABEL = f"{GROUP}/model"
TRIGGER_ANNOTATION = f"{GROUP}/trigger-id"
TRIGGER_KIND_ANNOTATION = f"{GROUP}/trigger-kind"
VERSION_ANNOTATION = f"{GROUP}/model-version"
RETRAIN_ANNOTATION = f"{GROUP}/retrain-request"
RETRAIN_REASON_ANNOTATION = f"{GROUP}/retrain-reason"
APPROVE_ANNOTATION = f"{GROUP}/approve-version"
