"""NATS nkeys and a decentralized-auth JWT chain for tests, without `nsc`.

`nkeys` (a dependency) decodes and signs but does not create keys: a key is 32 random bytes
encoded with `nkeys.encode_seed`. The JWTs are what `nsc` writes (NATS JWT v2): a header
`{"typ": "JWT", "alg": "ed25519-nkey"}`, claims with `iss`/`sub` public nkeys, and an ed25519
signature by the issuer's seed over `header.payload` (base64url without padding).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

NO_LIMIT = -1


@dataclass(frozen=True)
class Key:
    seed: bytes  # the encoded seed, S...

    @property
    def public(self) -> str:
        return nkeys.from_seed(bytearray(self.seed)).public_key.decode()

    def sign(self, data: bytes) -> bytes:
        return nkeys.from_seed(bytearray(self.seed)).sign(data)


def new_key(prefix: int) -> Key:
    """A fresh nkey of one role (nkeys.PREFIX_BYTE_USER, _ACCOUNT, _OPERATOR)."""
    return Key(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: Key, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": issuer.public,
                              "name": name, "sub": subject, "nats": {**nats, "version": 2}}
    claims["jti"] = base64.b32encode(hashlib.sha256(
        json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = issuer.sign(f"{head}.{body}".encode())
    return f"{head}.{body}.{_b64(signature)}"


@dataclass(frozen=True)
class Decentralized:
    """An operator, one account and one user of it: the server config and the user's .creds."""

    server_config: str
    creds: str
    user_seed: bytes


def decentralized(folder: Path) -> Decentralized:
    operator = new_key(nkeys.PREFIX_BYTE_OPERATOR)
    system, account = new_key(nkeys.PREFIX_BYTE_ACCOUNT), new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    user = new_key(nkeys.PREFIX_BYTE_USER)
    operator_jwt = jwt(operator, operator.public, "pulsar-test",
                       {"type": "operator", "system_account": system.public})
    limits: dict[str, Any] = {name: NO_LIMIT for name in (
        "subs", "data", "payload", "imports", "exports", "conn", "leaf")}
    limits["wildcards"] = True
    system_jwt = jwt(operator, system.public, "SYS", {"type": "account", "limits": limits})
    # JetStream enabled for the account (the -js server, `pulsar deadletters`, the bridge)
    account_jwt = jwt(operator, account.public, "PULSAR", {"type": "account", "limits": {
        **limits, **{name: NO_LIMIT for name in (
            "mem_storage", "disk_storage", "streams", "consumer")}}})
    user_jwt = jwt(account, user.public, "pulsar", {
        "type": "user", "pub": {}, "sub": {}, "subs": NO_LIMIT, "data": NO_LIMIT,
        "payload": NO_LIMIT})
    (folder / "operator.jwt").write_text(operator_jwt)
    config = (f'operator: "{folder / "operator.jwt"}"\n'
              f"system_account: {system.public}\n"
              "resolver: MEMORY\n"
              f"resolver_preload: {{\n  {system.public}: {system_jwt}\n"
              f"  {account.public}: {account_jwt}\n}}\n")
    creds = ("-----BEGIN NATS USER JWT-----\n"
             f"{user_jwt}\n"
             "------END NATS USER JWT------\n\n"
             "************************* IMPORTANT *************************\n"
             "NKEY Seed printed below can be used to sign and prove identity.\n\n"
             "-----BEGIN USER NKEY SEED-----\n"
             f"{user.seed.decode()}\n"
             "------END USER NKEY SEED------\n")
    return Decentralized(config, creds, user.seed)
