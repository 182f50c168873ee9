"""Platform credentials for the pods the operator creates, by reference only.

The operator never reads a Secret and never writes a credential into a manifest: it names
Secrets (chart values, OperatorSettings) that must exist in each SurgeModel's namespace, and
the kubelet resolves them (`secretKeyRef` env, read-only Secret volumes for the TLS files and
an nkey login's file).
Images a tenant picks therefore get exactly the platform credentials this names, and a URI
with `user:password@` is passed on without its credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pulsar_core.redact import split_credentials

NATS_TLS_DIR = "/etc/pulsar/nats-tls"
NATS_KEY_DIR = "/etc/pulsar/nats-key"
# an nkey login's file in its Secret, and the variable that points at it
NATS_CREDS_KEY, NATS_NKEY_KEY = "user.creds", "user.nk"
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
    nats_creds_secret: str | None = None  # `user.creds`: PULSAR_NATS_CREDENTIALS_FILE
    nats_nkey_secret: str | None = None  # `user.nk`: PULSAR_NATS_NKEY_SEED_FILE

    def __post_init__(self) -> None:
        if self.nats_creds_secret and self.nats_nkey_secret:
            raise ValueError("name one NATS key Secret (PULSAR_NATS_CREDS_SECRET or "
                             "PULSAR_NATS_NKEY_SECRET): a pod logs in one way")

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
            entries += [{"name": name, "value": value} for name, value in self._key_file()]
        return entries

    def _tls_files(self) -> list[tuple[str, str]]:
        if not self.nats_tls_secret:
            return []
        files = [("PULSAR_NATS_CA_FILE", f"{NATS_TLS_DIR}/ca.crt")]
        if self.nats_tls_client_certificate:
            files += [("PULSAR_NATS_CERT_FILE", f"{NATS_TLS_DIR}/tls.crt"),
                      ("PULSAR_NATS_KEY_FILE", f"{NATS_TLS_DIR}/tls.key")]
        return files

    def _key_secret(self) -> tuple[str, str, str] | None:
        """(Secret, key, variable) of the nkey login, if one is named."""
        if self.nats_creds_secret:
            return self.nats_creds_secret, NATS_CREDS_KEY, "PULSAR_NATS_CREDENTIALS_FILE"
        if self.nats_nkey_secret:
            return self.nats_nkey_secret, NATS_NKEY_KEY, "PULSAR_NATS_NKEY_SEED_FILE"
        return None

    def _key_file(self) -> list[tuple[str, str]]:
        key = self._key_secret()
        return [] if key is None else [(key[2], f"{NATS_KEY_DIR}/{key[1]}")]

    def volumes(self, *, nats: bool) -> list[dict[str, Any]]:
        if not nats:
            return []
        volumes = []
        if self.nats_tls_secret:
            volumes.append({"name": "nats-tls", "secret": {"secretName": self.nats_tls_secret,
                                                           "defaultMode": 0o440}})
        if (key := self._key_secret()) is not None:
            volumes.append({"name": "nats-key", "secret": {
                "secretName": key[0], "defaultMode": 0o440, "items": [{"key": key[1],
                                                                       "path": key[1]}]}})
        return volumes

    def mounts(self, *, nats: bool) -> list[dict[str, Any]]:
        if not nats:
            return []
        mounts = []
        if self.nats_tls_secret:
            mounts.append({"name": "nats-tls", "mountPath": NATS_TLS_DIR, "readOnly": True})
        if self._key_secret() is not None:
            mounts.append({"name": "nats-key", "mountPath": NATS_KEY_DIR, "readOnly": True})
        return mounts
