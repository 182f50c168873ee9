"""OperatorSettings: one typed settings object, loaded from PULSAR_* at startup, failing fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulsar_core.nats_auth import NatsAuthError, nats_auth
from pulsar_core.settings import ServeSettings
from pulsar_operator.login import SERVICE_ACCOUNT_DIR

# The predictors' HTTP limits the platform may set (chart values predictor.http): operator
# field -> the ServeSettings field every predictor Deployment gets it as. ServeSettings owns
# their defaults and bounds: an unset one leaves the predictor at its default.
PREDICTOR_HTTP = {f"predictor_{name}": name for name in (
    "max_headers", "max_header_bytes", "header_timeout_seconds", "keep_alive_seconds",
    "max_concurrency")}


def _served(name: str) -> Any:
    """An operator field, unset by default, with the bounds of ServeSettings' `name` (taken
    from its Field, not copied), so the operator refuses at start what a predictor would."""
    info = ServeSettings.model_fields[name]
    bounds = {attr: getattr(item, attr) for item in info.metadata
              for attr in ("ge", "gt", "le", "lt") if getattr(item, attr, None) is not None}
    return Field(None, description=f"Every predictor's PULSAR_{name.upper()} (unset: the "
                 f"predictor's default, {info.default}): {info.description}", **bounds)


class OperatorSettings(BaseSettings):
    """Everything the operator process needs; every field is a PULSAR_<NAME> variable."""

    model_config = SettingsConfigDict(env_prefix="PULSAR_", extra="ignore")

    mlflow_tracking_uri: str = Field(description="MLflow tracking/registry URI (required).")
    nats_url: str | None = Field(None, description="NATS for retrain requests and model events.")
    mlflow_credentials_secret: str | None = Field(
        None, description="Secret in each SurgeModel namespace whose `username` and `password` "
        "(or `token`) trainers and predictors get as MLFLOW_TRACKING_* by secretKeyRef; "
        "credentials in PULSAR_MLFLOW_TRACKING_URI are never passed on.")
    nats_credentials_secret: str | None = Field(
        None, description="Secret in each SurgeModel namespace whose `username` and `password` "
        "(or `token`) trainers, predictors and bridges get as PULSAR_NATS_* by secretKeyRef.")
    nats_tls_secret: str | None = Field(
        None, description="Secret in each SurgeModel namespace with `ca.crt` (and `tls.crt`, "
        "`tls.key` for mutual TLS) mounted read-only into every pod that talks to NATS.")
    nats_tls_client_certificate: bool = Field(
        False, description="Also give those pods the Secret's tls.crt/tls.key (mutual TLS).")
    nats_creds_secret: str | None = Field(
        None, description="Secret in each SurgeModel namespace whose `user.creds` (a NATS "
        "credentials file: user JWT and nkey seed) is mounted read-only into every pod that "
        "talks to NATS, as PULSAR_NATS_CREDENTIALS_FILE. Not with PULSAR_NATS_NKEY_SECRET.")
    nats_nkey_secret: str | None = Field(
        None, description="Secret in each SurgeModel namespace whose `user.nk` (a user nkey "
        "seed) is mounted read-only into every pod that talks to NATS, as "
        "PULSAR_NATS_NKEY_SEED_FILE. Not with PULSAR_NATS_CREDS_SECRET.")

    @field_validator("nats_nkey_secret")
    @classmethod
    def _one_nats_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("nats_creds_secret"):
            raise ValueError("PULSAR_NATS_CREDS_SECRET is set too: name one NATS key Secret "
                             "(a pod logs in one way)")
        return value

    s3_credentials_secret: str | None = Field(
        None, description="Secret in each SurgeModel namespace whose AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) trainers get by secretKeyRef.")
    allowed_image_prefixes: list[str] = Field(
        default_factory=list, description="Images a SurgeModel may run (training, serving, "
        "bridge) must start with one of these, e.g. [\"ghcr.io/pulsar-dev/\"]; [] = any.")
    allowed_data_prefixes: list[str] = Field(
        default_factory=list, description="spec.data.uris must start with one of these, e.g. "
        "[\"s3://pulsar-data/\"]; [] = any the fixed rules allow (no '..', query, system "
        "folder or unknown scheme).")
    min_schedule_minutes: float = Field(
        60.0, ge=0, description="Shortest gap between two scheduled trainings of a model.")
    kube_api_url: str | None = Field(
        None, description="API server URL without auth (kubectl proxy, tests); default: "
        "in-cluster service account, then kubeconfig.")
    service_account_dir: Path = Field(
        SERVICE_ACCOUNT_DIR, description="Folder of the in-cluster service account's token, "
        "ca.crt and namespace (the server is KUBERNETES_SERVICE_HOST/PORT).")
    namespaces: list[str] = Field(default_factory=list, description="Watch these; [] = all.")
    workers: int = Field(16, ge=1, le=256, description="Concurrent reconciles of the resync loop.")
    full_resync_seconds: float = Field(
        600.0, gt=0, description="Longest time between two reconciles of a model with nothing "
        "due (level-triggered safety net; spread ±25% per model).")
    registry_poll_seconds: float = Field(300.0, gt=0, description="Registry poll per model.")
    rollout_check_seconds: float = Field(
        30.0, gt=0, description="How often a shadowing or watched rollout is judged again "
        "(spread ±10% per model), so a shadow is decided soon after its evidence is complete.")
    max_backoff_seconds: float = Field(300.0, gt=0, description="Cap of MLflow/NATS retries.")
    host: str = Field("0.0.0.0", description="Address the /metrics and /healthz endpoints "
                      "bind (the pod IP, or 127.0.0.1 outside a cluster).")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus port; 0 = off.")
    liveness_port: int = Field(8081, ge=0, le=65535, description="/healthz port; 0 = off.")
    standalone: bool = Field(False, description="Act at once, without leader election (one "
                             "replica on a laptop, tests). In a cluster leave it off: replicas "
                             "elect one leader on a Lease and the others stand by.")
    lease_name: str = Field("pulsar-operator", description="Leader-election Lease.")
    lease_namespace: str | None = Field(
        None, description="Namespace of the Lease; default: the pod's namespace (service "
        "account), else `default`.")
    lease_seconds: float = Field(15.0, gt=0, description="A standby takes over a Lease not "
                                 "renewed for this long (bound on failover after a crash).")
    lease_renew_seconds: float = Field(5.0, gt=0, description="How often the leader renews.")
    identity: str | None = Field(None, description="This replica in the Lease; default: "
                                 "POD_ID or the host name, plus the process id.")
    trainer_service_account: str | None = Field(
        None, description="ServiceAccount of trainer pods; default: each model's own "
        "`<model>-trainer`, created by the operator (no RBAC, no token).")
    job_start_grace_seconds: float = Field(
        60.0, gt=0, description="A training Job whose pods are refused by the API (quota, "
        "LimitRange, admission) or cannot start (bad image) this long after it was created "
        "fails at once with the reason, instead of at activeDeadlineSeconds.")
    retrain_durable: str = Field("pulsar-operator", description="JetStream durable consumer.")
    retrain_max_deliver: int = Field(20, ge=1, description="Deliveries before a request is "
                                     "terminated (e.g. no SurgeModel matches).")
    log_format: str = Field("json", pattern="^(json|plain)$", description="json | plain.")
    predictor_max_headers: int | None = _served("max_headers")
    predictor_max_header_bytes: int | None = _served("max_header_bytes")
    predictor_header_timeout_seconds: float | None = _served("header_timeout_seconds")
    predictor_keep_alive_seconds: int | None = _served("keep_alive_seconds")
    predictor_max_concurrency: int | None = _served("max_concurrency")

    def predictor_http(self) -> dict[str, float]:
        """The predictors' HTTP limits the platform set, by ServeSettings field (unset ones are
        left out: the predictors keep ServeSettings' defaults)."""
        values = {served: getattr(self, name) for name, served in PREDICTOR_HTTP.items()}
        return {served: value for served, value in values.items() if value is not None}


class SettingsError(RuntimeError):
    """Settings are missing or invalid; the message names each variable and the fix."""


def load_settings() -> OperatorSettings:
    try:
        settings = OperatorSettings()
        if settings.nats_url:
            nats_auth()
        return settings
    except NatsAuthError as error:
        raise SettingsError(f"{error}\nset the variables above (see docs/operator.md)") from None
    except ValidationError as error:
        lines = [
            f"PULSAR_{str(issue['loc'][0]).upper()}: {issue['msg']}" for issue in error.errors()
        ]
        raise SettingsError("invalid operator settings:\n  " + "\n  ".join(lines)
                            + "\nset the variables above (see docs/operator.md)") from error
