"""`pulsar train` from ClickHouse: a real server, a real MLflow store, the exit codes of the
CSV path, the query and window recorded in MLflow, and the password nowhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pulsar_trainer.cli import main

from pulsar_core.data.synthetic import generate_kandoo_csv
from tests.support.clickhouse import (
    READER,
    READER_PASSWORD,
    SKIP_REASON,
    ClickHouseServer,
    clickhouse_binary,
    read_export,
    running_clickhouse,
)

pytestmark = pytest.mark.skipif(clickhouse_binary() is None, reason=SKIP_REASON)
FAST = ["--cnn-epochs", "1", "--cnn-channels", "8", "--cnn-seeds", "1", "--horizons", "7.5",
        "30", "--backtest-folds", "1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    export = tmp_path_factory.mktemp("export") / "kandoo.csv"
    generate_kandoo_csv(export, n_hexagons=15, service_types=(1, 2), days=4, seed=11)
    with running_clickhouse(tmp_path_factory.mktemp("clickhouse")) as running:
        running.create_kandoo_table()
        running.insert_frame(read_export(export))
        yield running


@pytest.fixture
def reader_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSAR_CLICKHOUSE_USER", READER)
    monkeypatch.setenv("PULSAR_CLICKHOUSE_PASSWORD", READER_PASSWORD)


def test_train_from_clickhouse_records_the_query(server, mlflow_uri, reader_env, capsys):
    code = main([*FAST, "--clickhouse-url", server.url, "--city-id", "1", "--lookback-days",
                 "3", "--mlflow-uri", mlflow_uri, "--city", "chtown"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "registered: pulsar-chtown-all version 1" in captured.out
    assert READER_PASSWORD not in captured.out + captured.err
    client = MlflowClient(mlflow_uri)
    run = client.search_runs([client.get_experiment_by_name("pulsar-chtown-all").experiment_id])[0]
    params = run.data.params
    assert params["data.source"] == "clickhouse"
    assert params["data.clickhouse"] == f"snapp_raw_log.kandoo_parameter_nats at {server.url}"
    assert params["data.city_id"] == "1"
    assert params["data.window_start"] < params["data.window_end"]
    assert "clickhouse_password" not in params and "clickhouse_user" not in params
    assert READER_PASSWORD not in str(params) + str(run.data.tags)
    sql = Path(client.download_artifacts(run.info.run_id, "data/query.sql")).read_text()
    assert sql.startswith("SELECT hex_id") and "city_id = 1" in sql
    assert READER_PASSWORD not in sql
    assert run.data.metrics["rows_read"] > 0 and run.data.metrics["rows_rejected"] == 0


def test_wrong_password_is_exit_3_without_the_password(server, mlflow_uri, monkeypatch, capsys):
    monkeypatch.setenv("PULSAR_CLICKHOUSE_USER", READER)
    monkeypatch.setenv("PULSAR_CLICKHOUSE_PASSWORD", "Wr0ng-and-secret")
    code = main([*FAST, "--clickhouse-url", server.url, "--city-id", "1",
                 "--mlflow-uri", mlflow_uri])
    err = capsys.readouterr().err
    assert code == 3
    assert "refused the credentials of user 'pulsar'" in err
    assert "Wr0ng-and-secret" not in err and "Traceback" not in err


def test_an_empty_window_is_exit_2(server, mlflow_uri, reader_env, capsys):
    code = main([*FAST, "--clickhouse-url", server.url, "--city-id", "9",
                 "--mlflow-uri", mlflow_uri])
    err = capsys.readouterr().err
    assert code == 2
    assert "0 rows in window" in err and "city_id 9" in err


def test_a_password_is_never_a_flag(capsys):
    with pytest.raises(SystemExit):
        main(["--clickhouse-password", "x"])
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--clickhouse-url", "http://127.0.0.1:1", "--data", "x.csv", "--city-id", "1"],
     "data_uri and clickhouse_url are both set"),
    (["--clickhouse-url", "http://127.0.0.1:1"], "clickhouse_url needs city_id"),
])
def test_conflicting_sources_are_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_unreachable_server_is_exit_3(tmp_path, mlflow_uri, capsys):
    down = ClickHouseServer(tmp_path / "down")
    code = main([*FAST, "--clickhouse-url", down.url, "--city-id", "1",
                 "--mlflow-uri", mlflow_uri])
    assert code == 3
    assert "cannot reach ClickHouse" in capsys.readouterr().err
