"""Loading snapshot Parquet and raw kandoo CSV exports from files, directories, globs and URIs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pulsar_core.contract import SNAPSHOT_DTYPES, Col
from pulsar_core.data.loading import DataContractError, load_snapshots
from pulsar_core.data.synthetic import generate_kandoo_csv, generate_snapshots

HEX = 608774622493540351  # a real resolution-7 cell over Tehran
HEADER = (
    "from,to,service_type,city_id,hex_id,rule_sheet_id,surge_percent,cumulative_surge_percent,"
    "surge_absolute,cumulative_surge_absolute,rule_id,increase_factor,decrease_factor,resolution,"
    "reason,absolute_reason,accept_rate,price_cnvr,logstash_time,created_date,clickhouse_time"
)


def _row(time: str, surge: str, cum: str, rule: str = "", hex_id: str = str(HEX)) -> str:
    return (f"x,x,1,1,{hex_id},{rule},{surge},{cum},{surge}000,{cum}000,0,1,1,7,r,,0.7,0.6,"
            f"{time},2025-11-19,{time}")


def _hand_written_csv(path: Path) -> Path:
    rows = [
        _row("2025-11-19 23:03:00", "-6", "12", rule="5470"),
        _row("2025-11-19 23:00:10", "4", "10", rule="5470"),
        _row("2025-11-19 23:07:29", "5", "15"),  # last record of the period: its values win
        _row("2025-11-19 23:07:30", "0", "15", rule="6320"),  # next period, floor
        _row("2025-11-19 23:08:00", "not-a-number", "15"),
        _row("2025-11-19 23:09:00", "3", "15", hex_id="12345"),
        _row("", "3", "15"),
    ]
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_hand_written_export_aggregates_to_known_snapshots(tmp_path: Path) -> None:
    result = load_snapshots(_hand_written_csv(tmp_path / "export.csv"),
                            rejected_dir=tmp_path / "rej")
    snaps = result.snapshots
    assert list(snaps[Col.PERIOD_START].astype(str)) == [
        "2025-11-19 23:00:00+00:00", "2025-11-19 23:07:30+00:00"]
    first, second = snaps.iloc[0], snaps.iloc[1]
    # n=3, S=|4|+|-6|+|5|=15: get_prices=249, ride_requests=149, requests=165, accepts=115
    assert first[Col.DEMAND_SIGNAL] == 149 + 0.5 * 249
    assert first[Col.SUPPLY_SIGNAL] == 115
    assert first[Col.ACCEPTANCE_RATE] == pytest.approx(115 / 165)
    assert first[Col.PRICE_CONVERSION] == pytest.approx(149 / 249)
    assert (first[Col.SURGE_PERCENT], first[Col.CUMULATIVE_SURGE_PERCENT]) == (5.0, 15.0)
    assert pd.isna(first[Col.RULE_SHEET_ID])
    assert (second[Col.DEMAND_SIGNAL], second[Col.SUPPLY_SIGNAL]) == (8.0, 3.0)
    assert (second[Col.ACCEPTANCE_RATE], second[Col.PRICE_CONVERSION]) == (0.6, 0.5)
    assert second[Col.RULE_SHEET_ID] == 6320
    report = result.rejected
    assert report.counts == {"bad_type:surge_percent": 1, "invalid_hexagon": 1,
                             "null:clickhouse_time": 1}
    assert (report.rows_read, report.rows_kept) == (7, 4)
    written = pd.read_parquet(report.path)
    assert sorted(written["reason"]) == sorted(report.counts)
    assert "not-a-number" in set(written["surge_percent"])


def test_generated_export_loads_back_to_the_generated_snapshots(tmp_path: Path) -> None:
    expected = generate_kandoo_csv(tmp_path / "export.csv", n_hexagons=30, days=2, seed=3)
    result = load_snapshots(tmp_path / "export.csv")
    pd.testing.assert_frame_equal(result.snapshots, expected)
    assert result.rejected.rejected == 0
    assert result.rejected.rows_read == result.rejected.rows_kept > len(expected)


def test_chunk_boundaries_do_not_change_the_snapshots(tmp_path: Path) -> None:
    generate_kandoo_csv(tmp_path / "export.csv", n_hexagons=8, days=2, seed=5)
    tiny = load_snapshots(tmp_path / "export.csv", chunk_bytes=2_000)
    large = load_snapshots(tmp_path / "export.csv", chunk_bytes=64 << 20)
    pd.testing.assert_frame_equal(tiny.snapshots, large.snapshots)
    assert tiny.rejected.rows_read == large.rejected.rows_read


def test_records_of_one_period_split_across_files_are_merged(tmp_path: Path) -> None:
    lines = _hand_written_csv(tmp_path / "all.csv").read_text().splitlines()
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.csv").write_text("\n".join([lines[0], lines[1], lines[3]]) + "\n")
    (tmp_path / "parts" / "b.csv").write_text("\n".join([lines[0], lines[2], lines[4]]) + "\n")
    merged = load_snapshots(tmp_path / "parts").snapshots
    whole = load_snapshots(tmp_path / "all.csv").snapshots
    pd.testing.assert_frame_equal(merged, whole)


@pytest.fixture
def snapshot_files(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    frame = generate_snapshots(n_hexagons=20, days=2, seed=11)
    folder = tmp_path / "snaps"
    folder.mkdir()
    for service, part in frame.groupby(Col.SERVICE_TYPE):
        part.to_parquet(folder / f"service_{service}.parquet", index=False)
    (folder / "_SUCCESS").write_text("")
    return folder, frame


def test_parquet_from_file_directory_glob_and_uri(snapshot_files: tuple[Path, pd.DataFrame]
                                                  ) -> None:
    folder, frame = snapshot_files
    from_dir = load_snapshots(folder).snapshots
    pd.testing.assert_frame_equal(from_dir, frame)
    from_glob = load_snapshots(str(folder / "service_*.parquet")).snapshots
    pd.testing.assert_frame_equal(from_glob, frame)
    from_uri = load_snapshots(f"file://{folder}/service_2.parquet").snapshots
    assert set(from_uri[Col.SERVICE_TYPE]) == {2}
    from_list = load_snapshots([folder / "service_1.parquet", folder / "service_3.parquet"])
    assert set(from_list.snapshots[Col.SERVICE_TYPE]) == {1, 3}
    assert from_dir.dtypes.astype(str).to_dict() == SNAPSHOT_DTYPES


def test_scope_and_lookback_count_rows_left_out(snapshot_files: tuple[Path, pd.DataFrame]
                                                ) -> None:
    folder, frame = snapshot_files
    result = load_snapshots(folder, service_type_id=2, lookback_days=1)
    snaps = result.snapshots
    assert set(snaps[Col.SERVICE_TYPE]) == {2}
    assert snaps[Col.PERIOD_START].min() > frame[Col.PERIOD_START].max() - pd.Timedelta(days=1)
    report = result.rejected
    assert report.rows_kept == len(snaps)
    assert report.rows_read == report.rows_kept + report.rejected + report.out_of_scope


def test_duplicates_across_files_are_rejected(tmp_path: Path) -> None:
    frame = generate_snapshots(n_hexagons=5, days=1, seed=2)
    frame.to_parquet(tmp_path / "a.parquet")
    frame.iloc[:7].to_parquet(tmp_path / "b.parquet")
    result = load_snapshots(str(tmp_path / "*.parquet"), rejected_dir=tmp_path / "rej")
    pd.testing.assert_frame_equal(result.snapshots, frame)
    assert result.rejected.counts == {"duplicate": 7}
    assert len(pd.read_parquet(result.rejected.path)) == 7


def test_missing_column_names_it_the_format_and_the_fix(tmp_path: Path) -> None:
    generate_snapshots(n_hexagons=3, days=1).drop(columns=[Col.DEMAND_SIGNAL]).to_parquet(
        tmp_path / "s.parquet")
    with pytest.raises(DataContractError) as err:
        load_snapshots(tmp_path / "s.parquet")
    message = str(err.value)
    assert "snapshot-parquet input is missing column 'demand_signal'" in message
    assert "--data-format kandoo-csv" in message


def test_explicit_format_that_does_not_fit_says_which_columns(tmp_path: Path) -> None:
    generate_snapshots(n_hexagons=3, days=1).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(DataContractError, match="kandoo-csv input is missing columns 'hex_id'"):
        load_snapshots(tmp_path / "s.parquet", data_format="kandoo-csv")
    (tmp_path / "raw.csv").write_text(HEADER.replace(",hex_id", "") + "\n")
    with pytest.raises(DataContractError, match="missing column 'hex_id'"):
        load_snapshots(tmp_path / "raw.csv", data_format="kandoo-csv")


def test_unreadable_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="no such file or directory"):
        load_snapshots(tmp_path / "absent.parquet")
    with pytest.raises(DataContractError, match="no files match"):
        load_snapshots(str(tmp_path / "*.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataContractError, match=r"holds no \.parquet or \.csv files"):
        load_snapshots(tmp_path / "empty")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataContractError, match="cannot tell the format"):
        load_snapshots(tmp_path / "other.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataContractError, match=r"broken\.parquet"):
        load_snapshots(tmp_path / "broken.parquet", data_format="snapshot-parquet")


def test_a_column_of_the_wrong_type_is_a_whole_input_error(tmp_path: Path) -> None:
    frame = generate_snapshots(n_hexagons=3, days=1)
    frame[Col.DEMAND_SIGNAL] = "high"
    frame.to_parquet(tmp_path / "s.parquet")
    with pytest.raises(DataContractError, match=r"column 'demand_signal' has dtype .* float64"):
        load_snapshots(tmp_path / "s.parquet")


def _naive_csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    """The snapshots as a CSV with zone-less timestamps and H3 names for hexagons."""
    text = frame.assign(
        hexagon=[f"{h:x}" for h in frame[Col.HEXAGON]],
        period_start=frame[Col.PERIOD_START].dt.tz_localize(None),
        period_end=frame[Col.PERIOD_END].dt.tz_localize(None),
    )
    text.to_csv(tmp_path / "snaps.csv", index=False)
    return tmp_path / "snaps.csv"


def test_snapshot_csv_with_naive_timestamps_loads_when_their_zone_is_said(tmp_path: Path) -> None:
    frame = generate_snapshots(n_hexagons=4, days=1)
    loaded = load_snapshots(_naive_csv(tmp_path, frame), input_timezone="UTC").snapshots
    pd.testing.assert_frame_equal(loaded, frame)
    assert np.array_equal(loaded[Col.HEXAGON].to_numpy(), frame[Col.HEXAGON].to_numpy())


def test_naive_snapshot_timestamps_are_rejected_rows_with_a_hint(tmp_path: Path) -> None:
    """Never guessed as UTC: a file written in Tehran wall-clock time would shift by 3.5 h."""
    frame = generate_snapshots(n_hexagons=4, days=1)
    result = load_snapshots(_naive_csv(tmp_path, frame), rejected_dir=tmp_path / "rej")
    assert result.snapshots.empty
    assert result.rejected.counts == {"naive_time:period_start": len(frame)}
    assert "--input-timezone" in result.rejected.summary()
    assert len(pd.read_parquet(tmp_path / "rej" / "rejected.parquet")) == len(frame)


def test_naive_snapshot_timestamps_are_read_in_the_zone_said(tmp_path: Path) -> None:
    frame = generate_snapshots(n_hexagons=2, days=1)
    local = frame.assign(**{c: frame[c].dt.tz_convert("Asia/Tehran") for c in
                            (Col.PERIOD_START, Col.PERIOD_END)})
    loaded = load_snapshots(_naive_csv(tmp_path, local), input_timezone="Asia/Tehran").snapshots
    pd.testing.assert_frame_equal(loaded, frame)


def test_one_naive_row_rejects_only_itself(tmp_path: Path) -> None:
    frame = generate_snapshots(n_hexagons=2, days=1)
    text = frame.assign(**{c: frame[c].map(lambda t: t.isoformat()) for c in
                           (Col.PERIOD_START, Col.PERIOD_END)})
    text.loc[3, Col.PERIOD_START] = frame.loc[3, Col.PERIOD_START].strftime("%Y-%m-%d %H:%M:%S")
    text.to_csv(tmp_path / "mixed.csv", index=False)
    result = load_snapshots(tmp_path / "mixed.csv")
    assert result.rejected.counts == {"naive_time:period_start": 1}
    assert len(result.snapshots) == len(frame) - 1


def test_a_naive_parquet_column_is_rejected_unless_its_zone_is_said(tmp_path: Path) -> None:
    frame = generate_snapshots(n_hexagons=2, days=1)
    naive = frame.assign(**{c: frame[c].dt.tz_localize(None) for c in
                            (Col.PERIOD_START, Col.PERIOD_END)})
    naive.to_parquet(tmp_path / "naive.parquet")
    refused = load_snapshots(tmp_path / "naive.parquet")
    assert refused.snapshots.empty and refused.rejected.rejected == len(frame)
    read = load_snapshots(tmp_path / "naive.parquet", input_timezone="UTC").snapshots
    pd.testing.assert_frame_equal(read, frame)


def test_an_unknown_input_timezone_names_the_setting(tmp_path: Path) -> None:
    frame = generate_snapshots(n_hexagons=2, days=1)
    with pytest.raises(DataContractError, match=r"--input-timezone 'Mars/Olympus'.*IANA"):
        load_snapshots(_naive_csv(tmp_path, frame), input_timezone="Mars/Olympus")


def test_a_kandoo_export_in_local_time_is_read_in_the_zone_said(tmp_path: Path) -> None:
    """The export's convention is UTC; an export written in Tehran time says so."""
    export = _hand_written_csv(tmp_path / "export.csv")
    utc = load_snapshots(export).snapshots
    tehran = load_snapshots(export, input_timezone="Asia/Tehran").snapshots
    assert len(utc) == len(tehran) == 2
    shift = utc[Col.PERIOD_START] - tehran[Col.PERIOD_START]
    assert (shift == pd.Timedelta(hours=3, minutes=30)).all()
