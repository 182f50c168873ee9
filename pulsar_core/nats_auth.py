"""NATS credentials and TLS: one source for every component that connects.

The operator, the trainer, the predictor, the signal bridge and `pulsar deadletters` all read
the same `PULSAR_NATS_*` variables. In a cluster each comes from a Secret by reference (a
`secretKeyRef` env entry, or a file of a mounted Secret), so no value is ever written into a
pod spec; outside a cluster they are plain environment variables (never flags: a flag shows
in `ps`). A URL with `user:password@` still works and is masked wherever it is printed.
"""

from __future__ import annotations

import importlib.util
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PULSAR_NATS_"


class NatsAuthError(ValueError):
    """The NATS credentials or TLS files are unusable; the message names the variable."""


class NatsAuth(BaseSettings):
    """How to authenticate to NATS and whether to speak TLS (all optional)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    credentials_file: Path | None = None  # a .creds file (user JWT + nkey seed)
    ca_file: Path | None = None  # trust this CA: TLS to the server
    cert_file: Path | None = None  # client certificate (mutual TLS), with key_file
    key_file: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> NatsAuth:
        if self.password is not None and not self.user:
            raise ValueError("PULSAR_NATS_PASSWORD is set without PULSAR_NATS_USER: set both")
        if self.token is not None and self.user:
            raise ValueError("set either PULSAR_NATS_TOKEN or PULSAR_NATS_USER/PASSWORD, "
                             "not both (a server accepts one method)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("PULSAR_NATS_CERT_FILE and PULSAR_NATS_KEY_FILE go together "
                             "(mutual TLS needs the certificate and its key)")
        if self.credentials_file is not None and importlib.util.find_spec("nkeys") is None:
            raise ValueError("PULSAR_NATS_CREDENTIALS_FILE needs the `nkeys` package (pip "
                             "install nkeys), or use PULSAR_NATS_USER/PASSWORD or _TOKEN")
        for name in ("credentials_file", "ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{ENV_PREFIX}{name.upper()}={path} is not a readable file; "
                                 "mount the Secret that holds it, or unset the variable")
        return self

    @property
    def tls(self) -> bool:
        return self.ca_file is not None or self.cert_file is not None

    def secret_values(self) -> list[str]:
        """The values log redaction must mask."""
        return [s.get_secret_value() for s in (self.password, self.token) if s is not None]

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect` (none when nothing is configured)."""
        options: dict[str, Any] = {}
        if self.user:
            options["user"] = self.user
            if self.password is not None:
                options["password"] = self.password.get_secret_value()
        if self.token is not None:
            options["token"] = self.token.get_secret_value()
        if self.credentials_file is not None:
            options["user_credentials"] = str(self.credentials_file)
        if self.tls:
            options["tls"] = self._tls_context()
        return options

    def _tls_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None)
            if self.cert_file is not None and self.key_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError) as error:
            raise NatsAuthError(f"NATS TLS files unusable ({error}); check PULSAR_NATS_CA_FILE, "
                                "_CERT_FILE and _KEY_FILE (PEM)") from None
        return context


@lru_cache(maxsize=1)
def nats_auth() -> NatsAuth:
    """This process's NATS credentials, read once from the environment."""
    try:
        return NatsAuth()
    except ValidationError as error:
        problems = "; ".join(str(issue["msg"]).removeprefix("Value error, ")
                             for issue in error.errors())
        raise NatsAuthError(f"NATS credentials: {problems}") from None


def connect_options() -> dict[str, Any]:
    """`nats_auth().connect_options()`: what every `nats.connect` call in Pulsar adds."""
    return nats_auth().connect_options()
