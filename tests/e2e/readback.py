"""Read back everything Pulsar wrote and look for secret values in it.

Every object in the namespaces it acts in (Secrets excepted: they are where the values
belong), every pod's log on the test kubelet, and everything the MLflow registry holds for a
model (its versions' tags and descriptions, its runs' params and tags).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tests.e2e.stack import RELEASE_NS, Installed

READ_BACK_KINDS = ("SurgeModel", "Job", "Pod", "Deployment", "ReplicaSet", "Service",
                   "ServiceAccount", "ConfigMap", "Event", "PodDisruptionBudget",
                   "HorizontalPodAutoscaler", "Lease")


def _registry_text(mlflow_url: str, registered: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    parts: list[Any] = []
    for version in client.search_model_versions(f"name='{registered}'"):
        parts += [version.tags, version.description, version.source, version.run_id]
        if version.run_id:
            run = client.get_run(version.run_id)
            parts += [run.data.params, run.data.tags, run.info.artifact_uri]
    return json.dumps(parts, default=str)


def secrets_found(installed: Installed, namespaces: Iterable[str], secrets: Iterable[str],
                  mlflow_url: str, registered: str) -> dict[str, list[str]]:
    """{where: [secret values found there]} (empty when nothing leaked); also asserts that
    there was something to read, so the check cannot pass on an empty cluster."""
    secrets = [value for value in secrets if value]
    texts: dict[str, str] = {}
    for namespace in [*namespaces, RELEASE_NS]:
        for kind in READ_BACK_KINDS:
            for item in installed.api.list(kind, namespace):
                texts[f"{kind} {namespace}/{item['metadata']['name']}"] = json.dumps(item)
    logs = sorted(installed.kubelet.workdir.glob("*/*.log"))
    for log in logs:
        texts[f"log {log.parent.name}/{log.name}"] = log.read_text(errors="replace")
    texts[f"MLflow {registered}"] = _registry_text(mlflow_url, registered)
    kinds = {where.split()[0] for where in texts}
    assert {"Job", "Pod", "Deployment", "Event", "SurgeModel", "log"} <= kinds, kinds
    assert any(where.startswith("log ") and "trainer" in where for where in texts), logs
    return {where: [value[:3] + "…" for value in secrets if value in text]
            for where, text in texts.items() if any(value in text for value in secrets)}
