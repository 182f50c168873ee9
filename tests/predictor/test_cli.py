"""`pulsar serve` as a real process: flags over env, a real uvicorn, clean exit on SIGTERM."""

import os
import signal
import subprocess
import sys

import httpx
from pulsar_predictor.cli import build_parser, settings_from

from pulsar_core.registry import Registry
from tests.predictor.bundles import MODEL, register
from tests.support.services import free_port, wait_for_port


def test_flags_win_over_env_and_env_over_defaults(monkeypatch) -> None:
    monkeypatch.setenv("PULSAR_MAX_HEXAGONS", "77")
    monkeypatch.setenv("PULSAR_PORT", "9000")
    settings = settings_from(build_parser().parse_args(["--port", "9100", "--model-version",
                                                        "3"]))
    assert (settings.port, settings.max_hexagons, settings.model_version) == (9100, 77, "3")
    assert settings.model_alias == "champion"


def test_invalid_flag_names_the_flag_and_variable(capsys) -> None:
    from pulsar_predictor.cli import main

    assert main(["--confidence-threshold", "2"]) == 2
    error = capsys.readouterr().err
    assert "--confidence-threshold" in error and "PULSAR_CONFIDENCE_THRESHOLD" in error


def test_serve_process_answers_and_exits_cleanly_on_sigterm(mlflow_uri, tiny_bundle,
                                                            tmp_path) -> None:
    Registry(mlflow_uri).set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    port = free_port()
    env = {**os.environ, "PULSAR_MLFLOW_TRACKING_URI": mlflow_uri,
           "PULSAR_REGISTERED_MODEL": MODEL}
    process = subprocess.Popen(
        [sys.executable, "-m", "pulsar_cli.main", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--drain-seconds", "5", "--log-level", "info"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(600):
                if client.get("/readyz").status_code == 200:
                    break
                subprocess.run(["sleep", "0.1"], check=True)
            model = client.get("/v1/model").json()
            assert model["model"] == {"name": MODEL, "version": "1",
                                      "run_id": model["model"]["run_id"]}
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    # uvicorn drains, runs the lifespan shutdown, then re-raises SIGTERM so the exit status
    # still says why the process ended.
    assert process.returncode in (0, -signal.SIGTERM), output.decode()[-2000:]
    assert b"Application shutdown complete" in output
    assert b"Traceback" not in output
