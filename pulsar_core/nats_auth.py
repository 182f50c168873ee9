"""NATS credentials and TLS: one source for every component that connects.

The operator, the trainer, the predictor, the signal bridge and `pulsar deadletters` all read
the same `PULSAR_NATS_*` variables. In a cluster each comes from a Secret by reference (a
`secretKeyRef` env entry, or a file of a mounted Secret), so no value is ever written into a
pod spec; outside a cluster they are plain environment variables (never flags: a flag shows
in `ps`). A URL with `user:password@` still works and is masked wherever it is printed.

A login is one of: a user and password, a token, a `.creds` file (user JWT and nkey seed, for a
server in operator/JWT mode) or a file holding a user nkey seed (`nkey:` users in the server's
config). The files are read once at start to check them (their contents never appear in a
message); nats-py reads them again on each connect, so a rotated Secret is picked up.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any

import nkeys
from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PULSAR_NATS_"
# the one login a client may use, by its variables (a server accepts one method)
LOGINS = ("PULSAR_NATS_USER/PASSWORD", "PULSAR_NATS_TOKEN", "PULSAR_NATS_CREDENTIALS_FILE",
          "PULSAR_NATS_NKEY_SEED_FILE")


class NatsAuthError(ValueError):
    """The NATS credentials or TLS files are unusable; the message names the variable."""


class NatsAuth(BaseSettings):
    """How to authenticate to NATS and whether to speak TLS (all optional)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    credentials_file: Path | None = None  # a .creds file (user JWT + nkey seed)
    nkey_seed_file: Path | None = None  # a user nkey seed (SU...), for an `nkey:` user
    ca_file: Path | None = None  # trust this CA: TLS to the server
    cert_file: Path | None = None  # client certificate (mutual TLS), with key_file
    key_file: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> NatsAuth:
        if self.password is not None and not self.user:
            raise ValueError("PULSAR_NATS_PASSWORD is set without PULSAR_NATS_USER: set both")
        logins = [name for name, given in zip(LOGINS, (
            self.user, self.token, self.credentials_file, self.nkey_seed_file), strict=True)
            if given is not None and given != ""]
        if len(logins) > 1:
            raise ValueError(f"{' and '.join(logins)} are set: set one NATS login, not both "
                             f"(a server accepts one method; choose among {', '.join(LOGINS)})")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("PULSAR_NATS_CERT_FILE and PULSAR_NATS_KEY_FILE go together "
                             "(mutual TLS needs the certificate and its key)")
        for name in ("credentials_file", "nkey_seed_file", "ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{ENV_PREFIX}{name.upper()}={path} is not a readable file; "
                                 "mount the Secret that holds it, or unset the variable")
        if self.credentials_file is not None:
            _check_user_seed("PULSAR_NATS_CREDENTIALS_FILE", self.credentials_file, creds=True)
        if self.nkey_seed_file is not None:
            _check_user_seed("PULSAR_NATS_NKEY_SEED_FILE", self.nkey_seed_file, creds=False)
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
        if self.nkey_seed_file is not None:
            options["nkeys_seed"] = str(self.nkey_seed_file)
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


def _check_user_seed(variable: str, path: Path, *, creds: bool) -> None:
    """Is there a user nkey seed in `path` (a seed file, or a .creds file with a user JWT)?

    The messages name the variable and the path, never a byte of the file.
    """
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{variable}={path} is not a readable file ({error.strerror}); mount "
                         "the Secret that holds it, or unset the variable") from None
    what = ("a NATS credentials file (-----BEGIN NATS USER JWT----- and "
            "-----BEGIN USER NKEY SEED----- blocks, as `nsc generate creds` writes)" if creds
            else "one user nkey seed (a line starting with SU)")
    seed = _creds_seed(text) if creds else text.strip()
    if seed is None or (creds and b"BEGIN NATS USER JWT" not in text):
        raise ValueError(f"{variable}={path} is not {what}")
    try:
        prefix, _ = nkeys.decode_seed(seed)
        raw = base64.b32decode(seed + b"=" * (-len(seed) % 8))
    except (nkeys.NkeysError, binascii.Error, ValueError):
        prefix, raw = None, b""
    if prefix is None or nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:  # nkeys skips the CRC
        raise ValueError(f"{variable}={path} is not {what}: the seed does not decode")
    if prefix != nkeys.PREFIX_BYTE_USER:
        raise ValueError(f"{variable}={path} holds an nkey seed that is not a user's (a user "
                         "seed starts with SU)")


def _creds_seed(text: bytes) -> bytes | None:
    """The line after `-----BEGIN USER NKEY SEED-----` in a .creds file, if any."""
    lines = text.splitlines()
    for number, line in enumerate(lines[:-1]):
        if b"BEGIN USER NKEY SEED" in line:
            return lines[number + 1].strip()
    return None


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
