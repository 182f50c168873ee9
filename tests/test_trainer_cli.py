"""`pulsar train`: exit codes, one-line errors, env defaults, the remote `mlflow server` path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pulsar_trainer.cli import main
from pulsar_trainer.settings_cli import env_contract_markdown

from pulsar_core.bundle import load_forecaster
from pulsar_core.data.synthetic import generate_snapshots
from pulsar_core.registry import Registry
from tests.support.services import free_port, running_mlflow_server

DOCS = Path(__file__).resolve().parents[1] / "docs" / "trainer.md"
FAST = ["--cnn-epochs", "1", "--cnn-channels", "8", "--horizons", "7.5", "30"]


@pytest.fixture(scope="module")
def snapshots() -> pd.DataFrame:
    return generate_snapshots(n_hexagons=20, service_types=(1, 2), days=4, seed=9)


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_missing_file_is_one_clear_line(mlflow_uri, tmp_path, capsys):
    code = main(["--data", str(tmp_path / "absent.parquet"), "--mlflow-uri", mlflow_uri])
    err = capsys.readouterr().err
    assert code == 2
    assert _last_line(err).startswith("pulsar train: no such file or directory")
    assert "absent.parquet" in _last_line(err) and "Traceback" not in err


def test_the_error_line_is_the_termination_message(mlflow_uri, tmp_path, monkeypatch, capsys):
    message = tmp_path / "termination-log"
    monkeypatch.setenv("PULSAR_TERMINATION_MESSAGE_PATH", str(message))
    code = main(["--data", str(tmp_path / "absent.parquet"), "--mlflow-uri", mlflow_uri])
    assert code == 2
    written = message.read_text()
    assert written.startswith("no such file or directory") and "absent.parquet" in written
    assert "\n" not in written and f"pulsar train: {written}" == _last_line(capsys.readouterr().err)


def test_an_unwritable_termination_file_keeps_the_exit_code(mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("PULSAR_TERMINATION_MESSAGE_PATH", str(tmp_path / "no" / "dir" / "log"))
    assert main(["--data", str(tmp_path / "absent.parquet"), "--mlflow-uri", mlflow_uri]) == 2


def test_the_termination_message_is_bounded_to_4_kib(tmp_path, monkeypatch):
    from pulsar_trainer.cli import write_termination_message

    message = tmp_path / "termination-log"
    monkeypatch.setenv("PULSAR_TERMINATION_MESSAGE_PATH", str(message))
    write_termination_message("x" * 10_000 + "\nsecond line")
    assert len(message.read_bytes()) == 4096 and set(message.read_text()) == {"x"}


def test_missing_column_names_the_column(mlflow_uri, tmp_path, snapshots, capsys):
    path = tmp_path / "bad.parquet"
    snapshots.drop(columns=["demand_signal"]).to_parquet(path)
    code = main(["--data", str(path), "--mlflow-uri", mlflow_uri])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing column 'demand_signal'" in _last_line(err) and "Traceback" not in err
    assert Registry(mlflow_uri).versions("pulsar-tehran-all") == []


def test_naive_timestamps_stop_training_with_the_flag_that_fixes_them(mlflow_uri, tmp_path,
                                                                     snapshots, capsys):
    path = tmp_path / "local.parquet"
    snapshots.assign(**{c: snapshots[c].dt.tz_localize(None) for c in
                        ("period_start", "period_end")}).to_parquet(path)
    code = main(["--data", str(path), "--mlflow-uri", mlflow_uri])
    line = _last_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("pulsar train: no valid rows left to train on")
    assert f"naive_time:period_start {len(snapshots):,}" in line and "--input-timezone" in line
    assert Registry(mlflow_uri).versions("pulsar-tehran-all") == []


def test_input_timezone_city_reads_naive_timestamps_in_the_citys_zone():
    from pulsar_trainer.pipeline import input_timezone

    from pulsar_core.settings import TrainSettings

    assert input_timezone(TrainSettings(input_timezone="city")) == "Asia/Tehran"
    assert input_timezone(TrainSettings(input_timezone="city", city="x", timezone="UTC")) == "UTC"
    assert input_timezone(TrainSettings()) is None


def test_bad_env_and_unreachable_mlflow(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PULSAR_CNN_EPOCHS", "many")
    assert main(["--data", "x.parquet"]) == 2
    assert "--cnn-epochs / PULSAR_CNN_EPOCHS" in capsys.readouterr().err
    # A flag wins over the environment.
    uri = f"http://127.0.0.1:{free_port()}"
    assert main(["--data", "x.parquet", "--cnn-epochs", "2", "--mlflow-uri", uri]) == 3
    err = capsys.readouterr().err
    assert _last_line(err) == (
        f"pulsar train: MLflow at {uri} is unreachable ([Errno 111] Connection refused); "
        "check PULSAR_MLFLOW_TRACKING_URI")
    assert main(["--horizons", "31", "--data", "x"]) == 2
    assert "not a positive multiple of 7.5 minutes" in capsys.readouterr().err


def test_docs_carry_the_generated_env_contract(capsys):
    assert main(["--env-contract"]) == 0
    table = capsys.readouterr().out.strip()
    assert table == env_contract_markdown()
    assert table in DOCS.read_text(), "regenerate: pulsar train --env-contract (docs/trainer.md)"


def test_remote_mlflow_server_registration(tmp_path, snapshots, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "snapshots.parquet"
    snapshots.to_parquet(data)
    with running_mlflow_server(tmp_path / "server") as uri:
        monkeypatch.setenv("PULSAR_MLFLOW_TRACKING_URI", uri)  # env default, no flag
        monkeypatch.setenv("PULSAR_DATA_URI", f'["{data}"]')
        code = main([*FAST, "--city", "remote", "--run-key", "r1"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "registered: pulsar-remote-all version 1" in out
        assert f"{uri}/#/models/pulsar-remote-all/versions/1" in out
        assert "strongest baseline" in out and "gate: " in out
        Registry(uri).set_alias("pulsar-remote-all", "1")
        loaded = load_forecaster(uri, "pulsar-remote-all", dst_dir=tmp_path / "dl")
        assert loaded.version == "1"
        assert len(loaded.forecaster.predict(snapshots).frame) > 0
