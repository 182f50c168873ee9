"""NATS behind authentication and TLS: every Pulsar component connects with PULSAR_NATS_*.

A real nats-server with JetStream requires TLS with client certificates (mutual TLS) and a
user and password; a second one requires a token. The trainer's publisher, the operator's
session, the predictor's feed, the bridge and `pulsar deadletters` all connect with the same
variables, and refuse to start, naming the variable, when they are unusable. Two more servers
log in with nkeys: one knows a user by its public nkey (PULSAR_NATS_NKEY_SEED_FILE), one runs in
operator (JWT) mode with an operator -> account -> user chain made here without `nsc`
(PULSAR_NATS_CREDENTIALS_FILE, a .creds file).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import nkeys
import pytest
from pulsar_bridge.runtime import connect as bridge_connect
from pulsar_bridge.signals import ensure_dedupe_window
from pulsar_predictor.buffer import LiveBuffer
from pulsar_predictor.feed import SignalFeed
from pulsar_predictor.metrics import Metrics

from pulsar_core.dead_letters import DeadLettersUnavailable, list_dead_letters
from pulsar_core.events import MODEL_REGISTERED, ModelRegistered
from pulsar_core.nats_auth import NatsAuth, NatsAuthError, nats_auth
from pulsar_core.publisher import PublishError, publish_event_async
from pulsar_core.settings import ServeSettings
from tests.support.nats_keys import Decentralized, Key, decentralized, new_key
from tests.support.services import NatsServer
from tests.support.tls import TlsFiles, make_tls_files

USER, PASSWORD, TOKEN = "pulsar", "n4ts-pa55-SECRET", "n4ts-t0ken-SECRET"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _server(folder: Path, config: str) -> Iterator[NatsServer]:
    path = folder / "nats.conf"
    path.write_text(config)
    server = NatsServer(folder / "js", config=path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[NatsServer]:
    """TLS with verified client certificates, and a user with a password."""
    yield from _server(tmp_path_factory.mktemp("nats-tls"), f"""
tls {{
  cert_file: "{tls.server_cert}"
  key_file: "{tls.server_key}"
  ca_file: "{tls.ca}"
  verify: true
}}
authorization {{
  users = [ {{ user: "{USER}", password: "{PASSWORD}" }} ]
}}
""")


@pytest.fixture(scope="module")
def tokened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    yield from _server(tmp_path_factory.mktemp("nats-token"),
                       f'authorization {{ token: "{TOKEN}" }}\n')


@pytest.fixture(scope="module")
def nkey_user() -> Key:
    return new_key(nkeys.PREFIX_BYTE_USER)


@pytest.fixture(scope="module")
def nkeyed(tmp_path_factory: pytest.TempPathFactory, nkey_user: Key) -> Iterator[NatsServer]:
    """Knows one user by its public nkey: a client proves it holds the seed by signing."""
    yield from _server(tmp_path_factory.mktemp("nats-nkey"),
                       f"authorization {{\n  users = [ {{ nkey: {nkey_user.public} }} ]\n}}\n")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Decentralized:
    return decentralized(tmp_path_factory.mktemp("nats-chain"))


@pytest.fixture(scope="module")
def operator_mode(tmp_path_factory: pytest.TempPathFactory,
                  chain: Decentralized) -> Iterator[NatsServer]:
    """Trusts one operator; its account (JetStream on) and user come as JWTs."""
    yield from _server(tmp_path_factory.mktemp("nats-operator"), chain.server_config)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """PULSAR_NATS_* for one test: the process reads them once, so the cache is cleared."""
    for name in ("USER", "PASSWORD", "TOKEN", "CA_FILE", "CERT_FILE", "KEY_FILE",
                 "CREDENTIALS_FILE", "NKEY_SEED_FILE"):
        monkeypatch.delenv(f"PULSAR_NATS_{name}", raising=False)
    nats_auth.cache_clear()
    yield monkeypatch
    nats_auth.cache_clear()


def _mutual_tls(env: pytest.MonkeyPatch, tls: TlsFiles, password: str = PASSWORD) -> None:
    env.setenv("PULSAR_NATS_USER", USER)
    env.setenv("PULSAR_NATS_PASSWORD", password)
    env.setenv("PULSAR_NATS_CA_FILE", str(tls.ca))
    env.setenv("PULSAR_NATS_CERT_FILE", str(tls.client_cert))
    env.setenv("PULSAR_NATS_KEY_FILE", str(tls.client_key))


def _registered() -> ModelRegistered:
    return ModelRegistered(model_name="pulsar-tehran-eco", version="1", run_id="r1")


async def test_every_component_connects_with_mutual_tls_and_a_password(
        secured: NatsServer, tls: TlsFiles, env: pytest.MonkeyPatch) -> None:
    _mutual_tls(env, tls)
    # the trainer's publisher (JetStream when a stream holds the subject, else core NATS)
    assert await publish_event_async(secured.url, MODEL_REGISTERED, _registered()) == "core"
    # the bridge: connect, then a JetStream API call (the signals stream's dedupe window)
    client = await bridge_connect(secured.url)
    try:
        await ensure_dedupe_window(client.jetstream(), 3600)
        assert client.is_connected and client.connected_url.scheme == "nats"
    finally:
        await client.close()
    # `pulsar deadletters` (reads a JetStream stream)
    assert await list_dead_letters(secured.url, timeout=5) == []
    # the predictor's feed
    settings = ServeSettings(nats_url=secured.url, city="tehran", service_type="eco")
    feed = SignalFeed(settings, LiveBuffer(periods=8, max_series=10), Metrics(), print)
    await feed.start()
    try:
        for _ in range(200):
            if feed.connected:
                break
            await asyncio.sleep(0.05)
        assert feed.connected
    finally:
        await feed.stop()


async def test_the_operator_session_connects_with_mutual_tls(
        secured: NatsServer, tls: TlsFiles, env: pytest.MonkeyPatch) -> None:
    from pulsar_operator.nats_link import NatsLink, open_session

    _mutual_tls(env, tls)

    # the session needs only its link's URL; closing it reports "down" to the runtime
    runtime = SimpleNamespace(nats_error="closing")
    client = await open_session(NatsLink(runtime, secured.url))  # type: ignore[arg-type]
    try:
        assert client.is_connected
    finally:
        await client.close()


async def test_without_credentials_or_with_a_wrong_password_nothing_connects(
        secured: NatsServer, tokened: NatsServer, tls: TlsFiles,
        env: pytest.MonkeyPatch) -> None:
    with pytest.raises(PublishError, match="cannot connect to NATS"):
        await publish_event_async(tokened.url, MODEL_REGISTERED, _registered(), timeout=2)
    _mutual_tls(env, tls, password="wrong")
    with pytest.raises(DeadLettersUnavailable) as refused:
        await list_dead_letters(secured.url, timeout=2)
    assert "wrong" not in str(refused.value)


async def test_a_token_is_enough_for_a_token_server(
        tokened: NatsServer, env: pytest.MonkeyPatch) -> None:
    env.setenv("PULSAR_NATS_TOKEN", TOKEN)
    assert await list_dead_letters(tokened.url, timeout=5) == []


def _secret_file(folder: Path, name: str, content: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    path.chmod(0o400)
    return path


async def test_an_nkey_seed_file_logs_in_and_another_seed_is_refused(
        nkeyed: NatsServer, nkey_user: Key, tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    # nothing set: the server wants a login
    with pytest.raises(DeadLettersUnavailable):
        await list_dead_letters(nkeyed.url, timeout=2)
    env.setenv("PULSAR_NATS_NKEY_SEED_FILE",
               str(_secret_file(tmp_path, "user.nk", nkey_user.seed + b"\n")))
    nats_auth.cache_clear()
    assert await list_dead_letters(nkeyed.url, timeout=5) == []  # JetStream API
    assert await publish_event_async(nkeyed.url, MODEL_REGISTERED, _registered()) == "core"
    client = await bridge_connect(nkeyed.url)
    try:
        assert client.is_connected
    finally:
        await client.close()
    # a well-formed user seed the server does not know
    stranger = new_key(nkeys.PREFIX_BYTE_USER)
    env.setenv("PULSAR_NATS_NKEY_SEED_FILE",
               str(_secret_file(tmp_path, "other.nk", stranger.seed)))
    nats_auth.cache_clear()
    with pytest.raises(DeadLettersUnavailable) as refused:
        await list_dead_letters(nkeyed.url, timeout=2)
    assert stranger.seed.decode() not in str(refused.value)
    with pytest.raises(PublishError, match="cannot connect to NATS"):
        await publish_event_async(nkeyed.url, MODEL_REGISTERED, _registered(), timeout=2)


async def test_a_credentials_file_logs_in_to_an_operator_mode_server(
        operator_mode: NatsServer, chain: Decentralized, tmp_path: Path,
        env: pytest.MonkeyPatch) -> None:
    env.setenv("PULSAR_NATS_CREDENTIALS_FILE",
               str(_secret_file(tmp_path, "user.creds", chain.creds)))
    assert await list_dead_letters(operator_mode.url, timeout=5) == []
    assert await publish_event_async(operator_mode.url, MODEL_REGISTERED, _registered()) == "core"
    # the same-shaped file from an operator this server does not trust
    foreign = decentralized(tmp_path)
    env.setenv("PULSAR_NATS_CREDENTIALS_FILE",
               str(_secret_file(tmp_path, "foreign.creds", foreign.creds)))
    nats_auth.cache_clear()
    with pytest.raises(DeadLettersUnavailable) as refused:
        await list_dead_letters(operator_mode.url, timeout=2)
    assert foreign.user_seed.decode() not in str(refused.value)


async def test_the_operator_session_connects_with_a_credentials_file(
        operator_mode: NatsServer, chain: Decentralized, tmp_path: Path,
        env: pytest.MonkeyPatch) -> None:
    from pulsar_operator.nats_link import NatsLink, open_session

    env.setenv("PULSAR_NATS_CREDENTIALS_FILE",
               str(_secret_file(tmp_path, "user.creds", chain.creds)))
    runtime = SimpleNamespace(nats_error="closing")
    client = await open_session(NatsLink(runtime, operator_mode.url))  # type: ignore[arg-type]
    try:
        assert client.is_connected
    finally:
        await client.close()


def test_an_unusable_key_file_names_the_variable_never_the_seed(
        tmp_path: Path, chain: Decentralized, env: pytest.MonkeyPatch) -> None:
    user, account = new_key(nkeys.PREFIX_BYTE_USER), new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    typo = bytearray(user.seed)
    typo[10] = ord("A") if typo[10] != ord("A") else ord("B")  # the CRC catches it
    seed_file = _secret_file(tmp_path, "user.nk", user.seed)
    cases: dict[str, tuple[dict[str, str], bytes]] = {
        # two logins at once, each pair named
        "PULSAR_NATS_TOKEN and PULSAR_NATS_NKEY_SEED_FILE are set: set one NATS login": (
            {"PULSAR_NATS_TOKEN": "t", "PULSAR_NATS_NKEY_SEED_FILE": str(seed_file)}, b""),
        "PULSAR_NATS_CREDENTIALS_FILE and PULSAR_NATS_NKEY_SEED_FILE are set": (
            {"PULSAR_NATS_CREDENTIALS_FILE": str(_secret_file(tmp_path, "u.creds", chain.creds)),
             "PULSAR_NATS_NKEY_SEED_FILE": str(seed_file)}, chain.user_seed),
        "PULSAR_NATS_USER/PASSWORD and PULSAR_NATS_CREDENTIALS_FILE are set": (
            {"PULSAR_NATS_USER": "u", "PULSAR_NATS_CREDENTIALS_FILE": str(tmp_path / "u.creds")},
            chain.user_seed),
        # missing, a folder, not a seed, a seed with a typo, not a user's seed
        f"PULSAR_NATS_NKEY_SEED_FILE={tmp_path / 'missing.nk'} is not a readable file": (
            {"PULSAR_NATS_NKEY_SEED_FILE": str(tmp_path / "missing.nk")}, b""),
        f"PULSAR_NATS_CREDENTIALS_FILE={tmp_path} is not a readable file": (
            {"PULSAR_NATS_CREDENTIALS_FILE": str(tmp_path)}, b""),
        "PULSAR_NATS_NKEY_SEED_FILE=.* is not one user nkey seed .*does not decode": (
            {"PULSAR_NATS_NKEY_SEED_FILE": str(_secret_file(tmp_path, "pw.nk", "hunter2"))},
            b"hunter2"),
        "PULSAR_NATS_NKEY_SEED_FILE=.*: the seed does not decode": (
            {"PULSAR_NATS_NKEY_SEED_FILE": str(_secret_file(tmp_path, "typo.nk", bytes(typo)))},
            bytes(typo)),
        "PULSAR_NATS_NKEY_SEED_FILE=.* holds an nkey seed that is not a user's": (
            {"PULSAR_NATS_NKEY_SEED_FILE": str(_secret_file(tmp_path, "acc.nk", account.seed))},
            account.seed),
        "PULSAR_NATS_CREDENTIALS_FILE=.* is not a NATS credentials file": (
            {"PULSAR_NATS_CREDENTIALS_FILE": str(seed_file)}, user.seed),  # a seed, no JWT
    }
    for expected, (variables, secret) in cases.items():
        for name in ("TOKEN", "USER", "CREDENTIALS_FILE", "NKEY_SEED_FILE"):
            env.delenv(f"PULSAR_NATS_{name}", raising=False)
        for name, value in variables.items():
            env.setenv(name, value)
        nats_auth.cache_clear()
        with pytest.raises(NatsAuthError, match=expected) as unusable:
            nats_auth()
        assert not secret or secret.decode() not in str(unusable.value)
    # and a good one: nats-py gets the path, never the seed
    env.delenv("PULSAR_NATS_CREDENTIALS_FILE")
    assert NatsAuth(nkey_seed_file=seed_file).connect_options() == {"nkeys_seed": str(seed_file)}


def test_unusable_settings_name_the_variable_and_the_fix(
        tmp_path: Path, tls: TlsFiles, env: pytest.MonkeyPatch) -> None:
    cases = {
        "PULSAR_NATS_PASSWORD is set without PULSAR_NATS_USER": {"PULSAR_NATS_PASSWORD": "x"},
        "PULSAR_NATS_USER/PASSWORD and PULSAR_NATS_TOKEN are set: set one NATS login, not both":
            {"PULSAR_NATS_TOKEN": "t", "PULSAR_NATS_USER": "u"},
        "go together": {"PULSAR_NATS_CERT_FILE": str(tls.client_cert)},
        "PULSAR_NATS_CA_FILE=": {"PULSAR_NATS_CA_FILE": str(tmp_path / "missing.crt")},
    }
    for expected, variables in cases.items():
        for name in ("PULSAR_NATS_PASSWORD", "PULSAR_NATS_TOKEN", "PULSAR_NATS_USER",
                     "PULSAR_NATS_CERT_FILE", "PULSAR_NATS_CA_FILE"):
            env.delenv(name, raising=False)
        for name, value in variables.items():
            env.setenv(name, value)
        nats_auth.cache_clear()
        with pytest.raises(NatsAuthError, match=expected):
            nats_auth()
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate")
    with pytest.raises(NatsAuthError, match="PULSAR_NATS_CA_FILE"):
        NatsAuth(ca_file=garbage).connect_options()


def test_the_secrets_stay_out_of_reprs_and_are_masked_in_logs(tmp_path: Path) -> None:
    auth = NatsAuth(user=USER, password=PASSWORD)  # type: ignore[arg-type]
    assert PASSWORD not in repr(auth) and PASSWORD not in str(auth.model_dump())
    assert auth.secret_values() == [PASSWORD]
    seed = tmp_path / "user.nk"
    seed.write_bytes(new_key(nkeys.PREFIX_BYTE_USER).seed)
    keyed = NatsAuth(nkey_seed_file=seed)
    shown = repr(keyed) + str(keyed.model_dump()) + str(keyed.connect_options())
    assert str(seed) in shown and seed.read_text() not in shown


@pytest.mark.parametrize("command", ["serve", "bridge"])
def test_a_component_with_unusable_credentials_exits_2_naming_the_variable(
        command: str, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PULSAR_NATS_PASSWORD": PASSWORD}
    pulsar = str(Path(sys.executable).parent / "pulsar")
    done = subprocess.run([pulsar, command], env=env, timeout=120, capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "PULSAR_NATS_USER" in done.stderr and PASSWORD not in done.stderr + done.stdout
