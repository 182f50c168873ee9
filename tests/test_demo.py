"""`pulsar demo` end to end on a tiny synthetic city: train, register, gate, idempotent rerun."""

from __future__ import annotations

from pathlib import Path

from pulsar_cli.demo import horizon_line, main, run_key
from pulsar_core.gate import HorizonScore
from pulsar_core.registry import Registry

TINY = ["--hexagons", "25", "--days", "4", "--cnn-epochs", "1", "--no-serve"]


def test_demo_registers_gates_and_reuses_on_rerun(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(TINY) == 0
    first = capsys.readouterr().out
    assert "registered: pulsar-demo-all version 1\n" in first
    assert "strongest baseline" in first
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/.pulsar/mlflow.db" in first

    registry = Registry(f"sqlite:///{tmp_path}/.pulsar/mlflow.db")
    champion = registry.get_alias("pulsar-demo-all")
    if "gate: PASS" in first:
        assert champion is not None and champion.version == "1"
        assert "promoted: version 1 is now the champion" in first
    else:
        assert champion is None and "not promoted" in first
    assert any((tmp_path / ".pulsar" / "mlartifacts").iterdir())
    assert not (tmp_path / "mlruns").exists()  # artifacts stay under .pulsar/

    assert main(TINY) == 0
    second = capsys.readouterr().out
    assert "version 1 (reused: same data and settings as an earlier run)" in second
    assert [v.version for v in registry.versions("pulsar-demo-all")] == ["1"]


def test_run_key_follows_data_and_settings(tmp_path: Path):
    data = tmp_path / "a.parquet"
    data.write_bytes(b"one")
    key = run_key([str(data)], {"cnn_epochs": 1})
    assert key == run_key([str(data)], {"cnn_epochs": 1})
    assert key != run_key([str(data)], {"cnn_epochs": 2})
    data.write_bytes(b"two")
    assert key != run_key([str(data)], {"cnn_epochs": 1})


def test_missing_data_file_is_a_clear_error(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--data", str(tmp_path / "nope.parquet")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_demo_says_which_horizons_the_data_cannot_evaluate():
    scores = {h: HorizonScore(h, None if h == 90 else 10.0, 12.0, 11.0, 0 if h == 90 else 50)
              for h in (7.5, 30.0, 60.0, 90.0)}
    line = horizon_line(scores)
    assert line.startswith("\nevaluated horizons: 7.5, 30, 60 min; not evaluable in this data: "
                           "90 min (no run of consecutive periods reaches that far ahead")
    assert horizon_line({30.0: scores[30.0]}) == "\nevaluated horizons: 30 min"
