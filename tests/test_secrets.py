"""Credentials in URIs work, and no secret is ever shown: output, logs, probes, errors."""

from __future__ import annotations

import logging

import pytest
from pulsar_predictor import create_app
from pulsar_trainer.cli import main

from pulsar_core.data.synthetic import generate_snapshots
from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.client import eventually, serving
from tests.support.auth_proxy import auth_proxy
from tests.support.services import free_port, running_mlflow_server

FAST = ["--cnn-epochs", "1", "--cnn-channels", "8", "--horizons", "7.5", "30"]
PASSWORD = "pa55-w0rd-SECRET"
TOKEN = "bearer-t0ken-SECRET"


def _shown(*texts: str) -> str:
    return "\n".join(texts)


def test_redact_masks_uri_passwords_and_known_secrets() -> None:
    from pulsar_core.redact import redact, split_credentials

    text = f"MLflow at https://bob:{PASSWORD}@mlflow.example/x and nats://u:p@n:4222 {TOKEN}"
    assert redact(text, [TOKEN]) == ("MLflow at https://bob:***@mlflow.example/x and "
                                     "nats://u:***@n:4222 ***")
    bare, header = split_credentials(f"http://bob:{PASSWORD}@127.0.0.1:5000/api")
    assert bare == "http://127.0.0.1:5000/api" and header["Authorization"].startswith("Basic ")
    # what the operator writes into status conditions and Events when MLflow is down
    from pulsar_core.registry import RegistryUnavailable

    down = RegistryUnavailable(f"https://bob:{PASSWORD}@mlflow", f"GET https://bob:{PASSWORD}@x")
    assert PASSWORD not in str(down) and PASSWORD not in down.uri


def test_trainer_with_credentials_in_the_uri_registers_and_never_prints_them(
        tmp_path, monkeypatch, capsys, caplog) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "snapshots.parquet"
    generate_snapshots(n_hexagons=20, service_types=(1,), days=3, seed=9).to_parquet(data)
    caplog.set_level(logging.DEBUG)
    with running_mlflow_server(tmp_path / "server") as upstream, \
            auth_proxy(upstream, password=PASSWORD) as proxy:
        uri = proxy.with_credentials()
        code = main([*FAST, "--data", str(data), "--mlflow-uri", uri, "--city", "auth", "-v"])
        out, err = capsys.readouterr()
        assert code == 0, err[-2000:]
        assert Registry(uri).versions("pulsar-auth-all")[0].version == "1"
    assert proxy.seen and all(authorised for _, authorised in proxy.seen), proxy.seen[:5]
    assert proxy.seen[0][0] == "/health"
    assert "registered: pulsar-auth-all version 1" in out
    assert f"{proxy.url.replace('://', '://pulsar:***@')}/#/models/pulsar-auth-all" in out
    assert PASSWORD not in _shown(out, err, caplog.text)


def test_trainer_exit_3_with_credentials_sends_them_and_prints_none(capsys) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with auth_proxy(dead, password=PASSWORD) as proxy:
        code = main(["--data", "x.parquet", "--mlflow-uri", proxy.with_credentials()])
    out, err = capsys.readouterr()
    assert code == 3
    assert proxy.seen == [("/health", True)]  # the credentials went out, as a header
    assert err.strip().splitlines()[-1] == f"pulsar train: MLflow at {proxy.url} answered 502"
    assert PASSWORD not in _shown(out, err)


async def test_predictor_readyz_logs_and_errors_never_show_a_secret(
        tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    caplog.set_level(logging.DEBUG)
    nats = f"nats://feed:{PASSWORD}@127.0.0.1:{free_port()}"
    with auth_proxy(f"http://127.0.0.1:{free_port()}", password="other-password") as proxy:
        uri = proxy.with_credentials().replace("other-password", PASSWORD)  # wrong: 401
        settings = ServeSettings(mlflow_tracking_uri=uri, registered_model="pulsar-x",
                                 nats_url=nats, auth_token=TOKEN, alias_poll_seconds=3600)
        app = create_app(settings)
        async with serving(app) as client:
            runtime = app.state.runtime
            await eventually(lambda: runtime.slot.last_error is not None)
            ready = await client.get("/readyz")
            model = await client.get("/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
            denied = await client.get("/v1/model", headers={"Authorization": "Bearer nope"})
            metrics = await client.get("/metrics")
    assert proxy.seen and not any(authorised for _, authorised in proxy.seen)
    assert ready.status_code == 503 and model.status_code == 503 and denied.status_code == 403
    assert "401" in ready.text
    shown = _shown(ready.text, model.text, denied.text, metrics.text, caplog.text)
    assert PASSWORD not in shown and TOKEN not in shown


@pytest.fixture(autouse=True)
def _no_process_wide_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


