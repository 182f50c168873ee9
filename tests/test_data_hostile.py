"""Careless inputs through the CLIs: one line naming the problem, the documented exit code.

Exit codes (docs/exit-codes.md): 0 ok, 1 rows rejected, 2 bad input or settings, 3 a dependency
unreachable, 4 an internal error; never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pulsar_trainer.cli import main as train

from pulsar_cli.main import main
from pulsar_core.contract import PERIOD, Col
from pulsar_core.data.synthetic import generate_snapshots
from pulsar_core.registry import Registry
from tests.support.services import free_port

FAST = ["--cnn-epochs", "1", "--cnn-channels", "8", "--horizons", "7.5", "30"]


@pytest.fixture(scope="module")
def snapshots() -> pd.DataFrame:
    return generate_snapshots(n_hexagons=20, service_types=(1,), days=3, seed=9)


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_header_only_csv_is_a_clear_bad_input(tmp_path: Path, mlflow_uri: str,
                                              snapshots: pd.DataFrame, capsys) -> None:
    header = tmp_path / "header.csv"
    snapshots.head(0).to_csv(header, index=False)
    assert main(["data", "validate", str(header)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "no data rows in" in line and "header.csv" in line and "only a header" in line
    assert train(["--data", str(header), "--mlflow-uri", mlflow_uri]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "header.csv" in line and "only a header" in line


def test_a_file_without_line_breaks_is_not_read_whole(tmp_path: Path, capsys) -> None:
    blob = tmp_path / "blob.csv"
    with blob.open("wb") as handle:  # sparse: 64 MiB of NULs, no newline
        handle.truncate(64 << 20)
    assert main(["data", "validate", str(blob)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "no line break in its first 1,048,576 bytes" in line and "blob.csv" in line


def test_one_row_from_2099_is_rejected_and_counted_and_training_goes_on(
        tmp_path: Path, mlflow_uri: str, snapshots: pd.DataFrame, capsys) -> None:
    future = snapshots.tail(1).copy()
    future[Col.PERIOD_START] = pd.Timestamp("2099-01-01", tz="UTC")
    future[Col.PERIOD_END] = future[Col.PERIOD_START] + PERIOD
    data = tmp_path / "with_2099.parquet"
    pd.concat([snapshots, future], ignore_index=True).to_parquet(data)
    assert main(["data", "validate", str(data), "--rejected-dir", str(tmp_path / "r")]) == 1
    assert "in_future:period_start: 1" in capsys.readouterr().out
    code = train([*FAST, "--data", str(data), "--mlflow-uri", mlflow_uri,
                  "--rejected-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 0, err[-1500:]
    assert "in_future:period_start: 1" in err
    assert Registry(mlflow_uri).versions("pulsar-tehran-all")[0].version == "1"


def test_an_unreachable_s3_source_is_exit_3(tmp_path: Path, mlflow_uri: str,
                                            monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = (f"s3://bucket/data.parquet?endpoint_override=127.0.0.1:{free_port()}"
           "&scheme=http&region=us-east-1")
    assert main(["data", "validate", uri]) == 3
    assert "cannot reach 's3://bucket" in _one_line(capsys.readouterr().err)
    assert train(["--data", uri, "--mlflow-uri", mlflow_uri]) == 3
    assert "cannot reach" in _one_line(capsys.readouterr().err)


def test_mixed_cities_and_a_scope_matching_nothing_are_bad_input(
        tmp_path: Path, mlflow_uri: str, snapshots: pd.DataFrame, capsys) -> None:
    mixed = snapshots.copy()
    mixed.loc[mixed.index[::2], Col.CITY_ID] = 2
    data = tmp_path / "mixed.parquet"
    mixed.to_parquet(data)
    assert train([*FAST, "--data", str(data), "--mlflow-uri", mlflow_uri]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "the data holds 2 cities" in line and "--city-id" in line
    assert train([*FAST, "--data", str(data), "--mlflow-uri", mlflow_uri,
                  "--city-id", "7"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"(0 rows in scope of {len(mixed):,})" in line


def test_data_validate_exit_codes_tell_rejections_from_crashes(
        tmp_path: Path, snapshots: pd.DataFrame, monkeypatch: pytest.MonkeyPatch,
        capsys) -> None:
    data = tmp_path / "ok.parquet"
    snapshots.to_parquet(data)
    assert main(["data", "validate", str(data)]) == 0
    assert main(["data", "validate", str(tmp_path / "absent.parquet")]) == 2

    def bug(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("pulsar_core.data.cli.load_snapshots", bug)  # a crash, simulated
    assert main(["data", "validate", str(data)]) == 4
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("pulsar data validate: internal error: KeyError")


def test_a_uint64_hexagon_above_the_int64_range_rejects_its_rows_not_the_run(
        tmp_path: Path, snapshots: pd.DataFrame, capsys) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(snapshots, preserve_index=False)
    hexagons = snapshots[Col.HEXAGON].to_numpy().astype("uint64")
    hexagons[:3] = np.uint64(2**64 - 5)  # no int64 holds it
    column = table.schema.get_field_index(Col.HEXAGON)
    table = table.set_column(column, Col.HEXAGON, pa.array(hexagons, pa.uint64()))
    data = tmp_path / "uint64.parquet"
    pq.write_table(table, data)
    rejected = tmp_path / "rejected"
    assert main(["data", "validate", str(data), "--rejected-dir", str(rejected)]) == 1
    out = capsys.readouterr()
    assert "internal error" not in out.err
    assert f"kept {len(snapshots) - 3:,}, rejected 3" in out.out + out.err
    assert "bad_type:hexagon" in out.out + out.err


def test_a_csv_with_a_utf8_bom_reads_like_one_without(tmp_path: Path, snapshots: pd.DataFrame,
                                                      capsys) -> None:
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    snapshots.head(50).to_csv(plain, index=False)
    snapshots.head(50).to_csv(bom, index=False, encoding="utf-8-sig")
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    assert main(["data", "validate", str(bom), "--rejected-dir", str(tmp_path)]) == 0
    assert "kept 50, rejected 0" in capsys.readouterr().out
    from pulsar_core.data.loading import load_snapshots

    pd.testing.assert_frame_equal(load_snapshots(bom).snapshots, load_snapshots(plain).snapshots)
