"""Pure builders: (SurgeModel, trigger or version) -> the exact manifests the operator applies."""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

from pydantic_settings import BaseSettings

from pulsar_core.settings import (
    BridgeSettings,
    ServeSettings,
    TrainSettings,
)
from pulsar_operator.domain import SurgeModel, Trigger
from pulsar_operator.names import (
    GROUP,
    KIND,
    MANAGER,
    MODEL_LABEL,
    TRIGGER_ANNOTATION,
    TRIGGER_KIND_ANNOTATION,
    VERSION,
    VERSION_ANNOTATION,
)

SCRATCH = "/tmp"
# The per-pod request rate an autoscaler reads from the custom-metrics API: an adapter (e.g.
# prometheus-adapter) derives it from the predictor's pulsar_requests_total counter.
REQUEST_RATE_METRIC = "pulsar_requests_per_second"
BRIDGE = "signal-bridge"  # the bridge's app.kubernetes.io/component
C = TypeVar("C", bound=BaseSettings)


def short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_name(prefix: str, suffix: str, limit: int = 63) -> str:
    """`<prefix><suffix>` cut to `limit` chars; a long prefix is shortened with its own hash."""
    if len(prefix) + len(suffix) <= limit:
        return prefix + suffix
    keep = limit - len(suffix) - 7
    return f"{prefix[:keep].rstrip('-')}-{short_hash(prefix, 6)}{suffix}"


def job_name(model: SurgeModel, trigger: Trigger) -> str:
    """`<model>-train-<hash(trigger id)>`: the same trigger always names the same Job."""
    return dns_name(model.name, f"-train-{short_hash(trigger.id)}")


def predictor_name(model: SurgeModel) -> str:
    return dns_name(model.name, "-predictor")


def trainer_service_account(model: SurgeModel) -> str:
    """The platform's account when configured (e.g. for object-store access), else the model's."""
    return model.platform.service_account or dns_name(model.name, "-trainer")


def labels(model: SurgeModel, component: str) -> dict[str, str]:
    instance = dns_name(model.name, "")
    return {
        "app.kubernetes.io/name": "pulsar",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "pulsar",
        "app.kubernetes.io/managed-by": MANAGER,
        MODEL_LABEL: instance,
    }


def owner_reference(model: SurgeModel) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": model.name,
            "uid": model.uid, "controller": True, "blockOwnerDeletion": True}


def _metadata(model: SurgeModel, name: str, component: str,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": model.namespace,
                            "labels": labels(model, component),
                            "ownerReferences": [owner_reference(model)]}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _env(values: dict[str, str],
         secrets: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Plain values and secretKeyRef entries, one list sorted by name."""
    plain: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in values.items()]
    return sorted(plain + (secrets or []), key=lambda item: str(item["name"]))


def clickhouse_secret_env(model: SurgeModel) -> list[dict[str, Any]]:
    """PULSAR_CLICKHOUSE_USER/PASSWORD as secretKeyRef env: the kubelet reads the Secret, the
    operator never does, and no value is ever written into a manifest."""
    clickhouse = model.spec.data.clickhouse
    secret = clickhouse.credentials_secret if clickhouse is not None else None
    if secret is None:
        return []
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}}
            for env, key in (("PULSAR_CLICKHOUSE_PASSWORD", secret.password_key),
                             ("PULSAR_CLICKHOUSE_USER", secret.user_key))]


def _clickhouse_values(model: SurgeModel) -> dict[str, Any]:
    """The ClickHouse fields of a settings contract (none without spec.data.clickhouse)."""
    clickhouse = model.spec.data.clickhouse
    if clickhouse is None:
        return {}
    return {"clickhouse_url": clickhouse.url, "clickhouse_database": clickhouse.database,
            "clickhouse_table": clickhouse.table}


def _container_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _exact(contract: type[C], **values: Any) -> C:
    """The contract from these values and the defaults only, validated: `model_validate`
    skips pydantic-settings' sources, so the operator's own PULSAR_* variables (PULSAR_HOST,
    say) never leak into its children's env, and no environment is read per child."""
    return contract.model_validate(contract.model_construct(**values).model_dump())


def train_settings(model: SurgeModel, run_key: str) -> TrainSettings:
    """The trainer's env contract for this model; `run_key` makes Job retries idempotent."""
    spec, training = model.spec, model.spec.training
    return _exact(
        TrainSettings,
        mlflow_tracking_uri=model.platform.child_mlflow_uri,
        nats_url=model.platform.child_nats_url,
        model_namespace=model.namespace, model_name=model.name,
        registered_model_name=model.registered_model,
        city=spec.city, city_id=spec.city_id,
        service_type=spec.service_type, service_type_id=spec.service_type_id,
        data_uri=list(spec.data.uris or []), data_format=spec.data.format,
        input_timezone=spec.data.input_timezone,
        **_clickhouse_values(model),
        lookback_days=spec.data.lookback_days, holdout_days=spec.data.holdout_days,
        horizons_minutes=list(training.horizons_minutes), window=training.window,
        elasticnet_alpha=training.elastic_net.alpha,
        elasticnet_l1_ratio=training.elastic_net.l1_ratio,
        cnn_channels=training.cnn.channels, cnn_epochs=training.cnn.epochs,
        cnn_learning_rate=training.cnn.learning_rate, cnn_patience=training.cnn.patience,
        cnn_seeds=training.cnn.seeds, timezone=training.timezone,
        backtest_folds=training.backtest_folds,
        promotion_policy=spec.promotion.policy,
        min_improvement_over_persistence_pct=spec.promotion.min_improvement_over_persistence_pct,
        max_regression_vs_champion_pct=spec.promotion.max_regression_vs_champion_pct,
        run_key=run_key, rejected_dir=f"{SCRATCH}/rejected",
    )


def build_trainer_service_account(model: SurgeModel) -> dict[str, Any]:
    """The model's own trainer identity: no API permissions, no token mounted, owned."""
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _metadata(model, trainer_service_account(model), "trainer"),
            "automountServiceAccountToken": False}


EXIT_BAD_INPUT = 2  # the trainer's exit code for bad settings or data (docs/exit-codes.md)
TRAINER_CONTAINER = "trainer"


def build_training_job(model: SurgeModel, trigger: Trigger) -> dict[str, Any]:
    """The trainer Job for one trigger (batch/v1)."""
    name = job_name(model, trigger)
    training = model.spec.training
    credentials, nats = model.platform.credentials, model.platform.nats_url is not None
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": trainer_service_account(model),
        "automountServiceAccountToken": False,  # the trainer never calls the Kubernetes API
        "securityContext": _pod_security(),
        "containers": [{
            "name": TRAINER_CONTAINER,
            "image": training.image,
            "command": ["pulsar", "train"],  # the image's ENTRYPOINT, explicit
            "env": _env(train_settings(model, run_key=name).to_env(),
                        clickhouse_secret_env(model) + credentials.env("trainer", nats=nats)),
            "resources": training.resources.manifest(),
            "securityContext": _container_security(),
            "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH},
                             *credentials.mounts(nats=nats)],
            # the trainer writes its one-line error there; its log tail if it could not
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": [{"name": "scratch", "emptyDir": {}}, *credentials.volumes(nats=nats)],
    }
    annotations = {TRIGGER_ANNOTATION: trigger.id, TRIGGER_KIND_ANNOTATION: trigger.kind}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(model, name, "trainer", annotations),
        "spec": {
            "backoffLimit": training.backoff_limit,
            # exit 2 is bad data or settings (docs/exit-codes.md): no retry can cure it, so
            # the Job fails at once; other failures count against backoffLimit
            "podFailurePolicy": {"rules": [{
                "action": "FailJob",
                "onExitCodes": {"containerName": TRAINER_CONTAINER, "operator": "In",
                                "values": [EXIT_BAD_INPUT]}}]},
            "activeDeadlineSeconds": training.active_deadline_seconds,
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {"metadata": {"labels": labels(model, "trainer")}, "spec": pod_spec},
        },
    }


def serve_settings(model: SurgeModel, version: str) -> ServeSettings:
    """The predictor's env contract, serving exactly `version` (rollbacks are Deployment edits),
    with the platform's HTTP limits (the chart's predictor.http) where it set them."""
    spec = model.spec
    return _exact(
        ServeSettings,
        mlflow_tracking_uri=model.platform.child_mlflow_uri,
        registered_model=model.registered_model, model_version=version,
        nats_url=model.platform.child_nats_url, city=spec.city, service_type=spec.service_type,
        confidence_threshold=spec.serving.confidence_threshold,
        fallback=spec.serving.fallback, retrain_subject=model.retrain_subject,
        **model.platform.predictor_http,
    )


def _selector(model: SurgeModel, component: str) -> dict[str, str]:
    """The labels that pick one component's pods of a model."""
    return {key: value for key, value in labels(model, component).items()
            if key in ("app.kubernetes.io/instance", "app.kubernetes.io/component")}


def predictor_selector(model: SurgeModel) -> dict[str, str]:
    """The labels that pick a model's predictor pods (Deployment, Service and budget alike)."""
    return _selector(model, "predictor")


def _server_container(name: str, image: str, command: str, port: int,
                      env: list[dict[str, Any]], resources: dict[str, Any],
                      mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """A long-running Pulsar server (predictor, bridge): `/readyz` and `/healthz` on its
    `http` port, the restricted security context, a writable scratch dir and `mounts`."""
    return {
        "name": name,
        "image": image,
        "command": ["pulsar", command],
        "ports": [{"name": "http", "containerPort": port}],
        "env": env,
        "resources": resources,
        "securityContext": _container_security(),
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                          "periodSeconds": 20},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}, *mounts],
    }


def build_predictor_deployment(model: SurgeModel, version: str) -> dict[str, Any]:
    """The predictor Deployment (apps/v1) serving `version`."""
    name = predictor_name(model)
    selector = predictor_selector(model)
    credentials, nats = model.platform.credentials, model.platform.nats_url is not None
    container = _server_container(
        "predictor", model.spec.serving.image, "serve", 8080,
        _env(serve_settings(model, version).to_env(), credentials.env("predictor", nats=nats)),
        model.spec.serving.resources.manifest(), credentials.mounts(nats=nats))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(model, name, "predictor", {VERSION_ANNOTATION: version}),
        "spec": {
            # with an autoscaler the replica count is its to set: the operator leaves it alone
            **({} if model.spec.serving.autoscaling else {"replicas": model.spec.serving.replicas}),
            "selector": {"matchLabels": selector},
            "progressDeadlineSeconds": model.spec.serving.rollout_deadline_seconds,
            "template": {
                "metadata": {"labels": labels(model, "predictor"),
                             "annotations": {VERSION_ANNOTATION: version}},
                "spec": {"automountServiceAccountToken": False,
                         "securityContext": _pod_security(), "containers": [container],
                         "volumes": [{"name": "scratch", "emptyDir": {}},
                                     *credentials.volumes(nats=nats)]},
            },
        },
    }


def build_predictor_service(model: SurgeModel) -> dict[str, Any]:
    """ClusterIP Service in front of the predictor pods."""
    selector = predictor_selector(model)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(model, predictor_name(model), "predictor"),
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def build_predictor_pdb(model: SurgeModel) -> dict[str, Any]:
    """At most one predictor pod down at a time during node drains (only with 2+ replicas)."""
    selector = predictor_selector(model)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(model, predictor_name(model), "predictor"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }


def build_predictor_autoscaler(model: SurgeModel) -> dict[str, Any]:
    """The predictor's HorizontalPodAutoscaler (autoscaling/v2), from spec.serving.autoscaling."""
    scaling = model.spec.serving.autoscaling
    if scaling is None:
        raise ValueError("only a model with spec.serving.autoscaling gets an autoscaler")
    metrics: list[dict[str, Any]] = []
    if scaling.target_cpu_utilization_percent:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization",
            "averageUtilization": scaling.target_cpu_utilization_percent}}})
    if scaling.target_requests_per_second is not None:
        per_pod = f"{round(scaling.target_requests_per_second * 1000)}m"
        metrics.append({"type": "Pods", "pods": {
            "metric": {"name": REQUEST_RATE_METRIC},
            "target": {"type": "AverageValue", "averageValue": per_pod}}})
    name = predictor_name(model)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(model, name, "predictor"),
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": scaling.min_replicas, "maxReplicas": scaling.max_replicas,
                 "metrics": metrics},
    }


def predictor_endpoint(model: SurgeModel) -> str:
    return f"http://{predictor_name(model)}.{model.namespace}.svc"


def bridge_name(model: SurgeModel) -> str:
    """`<model>-bridge`: the signal bridge Deployment of the model that owns its scope."""
    return dns_name(model.name, "-bridge")


def bridge_settings(model: SurgeModel) -> BridgeSettings:
    """The bridge's env contract: poll spec.data.clickhouse (source bridge) or relay
    spec.signals.natsSubject (source nats) into pulsar.signals.<city>.<serviceType>."""
    spec = model.spec
    ids = {name: value for name, value in (("city_id", spec.city_id),
                                           ("service_type_id", spec.service_type_id))
           if value is not None}
    relay = {"relay_subject": spec.signals.nats_subject} if spec.signals.source == "nats" else {}
    platform = {"nats_url": model.platform.child_nats_url} if model.platform.nats_url else {}
    return _exact(BridgeSettings, city=spec.city, service_type=spec.service_type,
                  **ids, **relay, **platform, **_clickhouse_values(model))


def bridge_selector(model: SurgeModel) -> dict[str, str]:
    return _selector(model, BRIDGE)


def build_bridge_deployment(model: SurgeModel) -> dict[str, Any]:
    """The signal bridge (apps/v1 Deployment): one replica, and Recreate so that a rollout
    never runs two pollers of one scope side by side."""
    settings = bridge_settings(model)
    bridge = model.spec.signals.bridge
    credentials = model.platform.credentials
    container = _server_container(
        "bridge", bridge.image, "bridge", settings.port,
        _env(settings.to_env(), clickhouse_secret_env(model)
             + credentials.env("bridge", nats=True)),
        bridge.resources.manifest(), credentials.mounts(nats=True))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(model, bridge_name(model), BRIDGE),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": bridge_selector(model)},
            "template": {
                "metadata": {"labels": labels(model, BRIDGE)},
                "spec": {"automountServiceAccountToken": False,
                         "securityContext": _pod_security(), "containers": [container],
                         "volumes": [{"name": "scratch", "emptyDir": {}},
                                     *credentials.volumes(nats=True)]},
            },
        },
    }
