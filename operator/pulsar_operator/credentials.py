"""Platform credentials for the pods the operator creates, by reference only.

The operator never reads a Secret and never writes a credential into a manifest: it names
Secrets (chart values, OperatorSettings) that must exist in each SurgeModel's namespace, and
the kubelet resolves them (`secretKeyRef` env, a read-only Secret volume for TLS files).
Images a tenant picks therefore get exactly the platform credentials this names, and a URI
with `user:password@` is passed on without its credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pulsar_core.redact import split_credentials

NATS_TLS_DIR = "/etc/pulsar/nats-tls"
Component = Literal["trainer", "predictor", "bridge"]
# (environment variable, key in the Secret) per credential Secret
MLFLOW_KEYS = (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password"),
               ("MLFLOW_TRACKING_TOKEN", "token"))
NATS_KEYS = (("PULSAR_NATS_USER", "username"), ("PULSAR_NATS_PASSWORD", "password"),
             ("PULSAR_NATS_TOKEN", "token"))
S3_KEYS = (("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
           ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
           ("AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN"))


def without_credentials(uri: str | None) -> str | None:
    """`uri` less any `user:password@` (children get credentials from Secrets only)."""
    return None if uri is None else split_credentials(uri)[0]


def _refs(secret: str | None, keys: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    # optional: a Secret holds a user and password, or a token; a key it lacks stays unset
    if not secret:
        return []
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key,
                                                          "optional": True}}}
            for env, key in keys]


@dataclass(frozen=True)
class ChildCredentials:
    """Which Secrets (in the model's namespace) hold the platform's credentials."""

    mlflow_secret: str | None = None
    nats_secret: str | None = None
    nats_tls_secret: str | None = None
    nats_tls_client_certificate: bool = False
    s3_secret: str | None = None

    def env(self, component: Component, *, nats: bool) -> list[dict[str, Any]]:
        """The credential env entries of one component (`nats`: it talks to NATS)."""
        entries: list[dict[str, Any]] = []
        if component != "bridge":
            entries += _refs(self.mlflow_secret, MLFLOW_KEYS)
        if component == "trainer":
            entries += _refs(self.s3_secret, S3_KEYS)
        if nats:
            entries += _refs(self.nats_secret, NATS_KEYS)
            entries += [{"name": name, "value": value} for name, value in self._tls_files()]
        return entries

    def _tls_files(self) -> list[tuple[str, str]]:
        if not self.nats_tls_secret:
            return []
        files = [("PULSAR_NATS_CA_FILE", f"{NATS_TLS_DIR}/ca.crt")]
        if self.nats_tls_client_certificate:
            files += [("PULSAR_NATS_CERT_FILE", f"{NATS_TLS_DIR}/tls.crt"),
                      ("PULSAR_NATS_KEY_FILE", f"{NATS_TLS_DIR}/tls.key")]
        return files

    def volumes(self, *, nats: bool) -> list[dict[str, Any]]:
        if not (nats and self.nats_tls_secret):
            return []
        return [{"name": "nats-tls", "secret": {"secretName": self.nats_tls_secret,
                                                "defaultMode": 0o440}}]

    def mounts(self, *, nats: bool) -> list[dict[str, Any]]:
        if not (nats and self.nats_tls_secret):
            return []
        return [{"name": "nats-tls", "mountPath": NATS_TLS_DIR, "readOnly": True}]
