"""Secrets never leave the process: passwords in URIs and known tokens are masked in any text
that is shown (probes, errors, progress lines) and in every log record.

`https://user:pass@mlflow.example` is how many deployments give MLflow its basic-auth
credentials (requests honours them), so the URI itself is a secret wherever it is printed.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
# Credentials Pulsar's pods get from Secrets by reference: masked in every log of the process.
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PULSAR_NATS_PASSWORD",
              "PULSAR_NATS_TOKEN", "PULSAR_CLICKHOUSE_PASSWORD", "PULSAR_AUTH_TOKEN",
              "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# scheme://user:password@  (the password is what is masked; a user alone is no secret)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(?P<password>[^@/\s]+)@")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with URI passwords and the given secret values replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    for secret in secrets:
        if secret and secret.strip():
            text = text.replace(secret, MASK)
    return text


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """`http://user:pass@host/x` -> (`http://host/x`, a Basic Authorization header)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None:
        return uri, {}
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return parts._replace(netloc=netloc).geturl(), {"Authorization": f"Basic {token}"}


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's final message (attach it to handlers: it then sees the
    records of every logger, MLflow's and urllib3's included)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def environment_secrets() -> list[str]:
    """The values of the credential variables (SECRET_ENV) set in this process."""
    return [value for name in SECRET_ENV if (value := os.environ.get(name, "").strip())]


def install(secrets: Iterable[str | None] = ()) -> None:
    """Attach a RedactingFilter to every handler of the root logger (after basicConfig); it
    masks `secrets` and every credential variable of SECRET_ENV."""
    redacting = RedactingFilter([*secrets, *environment_secrets()])
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)
