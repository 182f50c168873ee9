"""Row-level validation: every rejection reason is counted, kept aside and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pulsar_core.contract import SNAPSHOT_DTYPES, Col, RawCol
from pulsar_core.data.errors import DataContractError
from pulsar_core.data.kandoo import records_to_snapshots
from pulsar_core.data.loading import load_snapshots
from pulsar_core.data.validation import validate_raw_records, validate_snapshots


def _snapshots() -> pd.DataFrame:
    from pulsar_core.data.synthetic import generate_snapshots

    return generate_snapshots(n_hexagons=12, days=1, seed=4).head(40).reset_index(drop=True)


BREAKAGES = {
    "null:demand_signal": (Col.DEMAND_SIGNAL, np.nan),
    "invalid_hexagon": (Col.HEXAGON, 12345),
    "out_of_range:service_type": (Col.SERVICE_TYPE, 0),
    "out_of_range:city_id": (Col.CITY_ID, -1),
    "out_of_range:demand_signal": (Col.DEMAND_SIGNAL, -5.0),
    "out_of_range:supply_signal": (Col.SUPPLY_SIGNAL, np.inf),
    "out_of_range:acceptance_rate": (Col.ACCEPTANCE_RATE, 1.5),
    "out_of_range:price_conversion": (Col.PRICE_CONVERSION, -0.1),
    "out_of_range:surge_percent": (Col.SURGE_PERCENT, 5000.0),
    "out_of_range:cumulative_surge_percent": (Col.CUMULATIVE_SURGE_PERCENT, -400.0),
    "out_of_range:surge_absolute": (Col.SURGE_ABSOLUTE, 1e12),
    "out_of_range:cumulative_surge_absolute": (Col.CUMULATIVE_SURGE_ABSOLUTE, -np.inf),
}


def _broken() -> pd.DataFrame:
    frame = _snapshots()
    frame = frame.astype({Col.HEXAGON: "int64", Col.DEMAND_SIGNAL: "float64"})
    for row, (col, value) in enumerate(BREAKAGES.values()):
        frame.loc[row, col] = value
    n = len(BREAKAGES)
    frame.loc[n, Col.PERIOD_START] += pd.Timedelta(minutes=1)
    frame.loc[n + 1, Col.PERIOD_END] += pd.Timedelta(minutes=1)
    frame.loc[n + 2, Col.PERIOD_START] = pd.NaT
    return pd.concat([frame, frame.iloc[[n + 5, n + 6]]], ignore_index=True)  # 2 duplicates


def test_every_snapshot_rejection_reason_is_counted() -> None:
    clean, rejected = validate_snapshots(_broken())
    expected = {reason: 1 for reason in BREAKAGES}
    expected |= {"misaligned_period": 1, "bad_period_end": 1, "null:period_start": 1,
                 "duplicate": 2}
    assert rejected["reason"].value_counts().to_dict() == expected
    assert len(clean) + len(rejected) == len(_broken())
    assert clean.dtypes.astype(str).to_dict() == SNAPSHOT_DTYPES
    assert not clean.duplicated([Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]).any()


def test_rejected_rows_are_written_and_nothing_is_lost(tmp_path: Path) -> None:
    _broken().to_parquet(tmp_path / "in.parquet")
    result = load_snapshots(tmp_path / "in.parquet", rejected_dir=tmp_path / "rejected")
    report = result.rejected
    assert report.rows_read == report.rows_kept + report.rejected == len(_broken())
    written = pd.read_parquet(report.path)
    assert written["reason"].value_counts().to_dict() == report.counts
    assert set(written["source"]) == {str(tmp_path / "in.parquet")}
    assert "duplicate: 2" in report.summary()


def test_bad_types_are_rejected_per_row_and_strings_are_coerced() -> None:
    frame = _snapshots().astype({Col.DEMAND_SIGNAL: object, Col.SERVICE_TYPE: object})
    frame[Col.DEMAND_SIGNAL] = frame[Col.DEMAND_SIGNAL].astype(str)
    frame.loc[0, Col.DEMAND_SIGNAL] = "lots"
    frame.loc[1, Col.SERVICE_TYPE] = "1.5"
    frame.loc[2, Col.SERVICE_TYPE] = "2"
    clean, rejected = validate_snapshots(frame)
    assert rejected["reason"].tolist() == ["bad_type:demand_signal", "bad_type:service_type"]
    assert clean.loc[2, Col.SERVICE_TYPE] == 2
    assert clean[Col.DEMAND_SIGNAL].dtype == "float64"


def test_tiny_frames_validate_like_live_messages() -> None:
    one = _snapshots().head(1)
    clean, rejected = validate_snapshots(one)
    assert (len(clean), len(rejected)) == (1, 0)
    empty_clean, empty_rejected = validate_snapshots(one.iloc[:0])
    assert empty_clean.empty and empty_rejected.empty
    with pytest.raises(DataContractError, match="missing column 'period_end'"):
        validate_snapshots(one.drop(columns=[Col.PERIOD_END]))


def _raw() -> pd.DataFrame:
    return pd.DataFrame({
        RawCol.HEX_ID: ["608774622493540351"] * 4,
        RawCol.SERVICE_TYPE: ["1", "1", "1", "1"],
        RawCol.CITY_ID: ["1", "1", "1", "0"],
        RawCol.CLICKHOUSE_TIME: ["2025-11-19T23:00:01Z", "2025-11-19 23:01:00", "yesterday",
                                 "2025-11-19 23:02:00"],
        RawCol.SURGE_PERCENT: ["4", "4", "4", "4"],
        RawCol.SURGE_ABSOLUTE: ["4000", "4000", "4000", "4000"],
        RawCol.CUMULATIVE_SURGE_PERCENT: ["10", "12", "12", "12"],
        RawCol.CUMULATIVE_SURGE_ABSOLUTE: ["1e4", "12000", "12000", "12000"],
        RawCol.RULE_SHEET_ID: [None, "5470", "5470", "5470"],
    })


def test_raw_records_validate_and_aggregate() -> None:
    clean, rejected = validate_raw_records(_raw())
    assert rejected["reason"].tolist() == ["bad_type:clickhouse_time", "out_of_range:city_id"]
    snaps = records_to_snapshots(clean)
    assert len(snaps) == 1
    assert snaps.loc[0, Col.DEMAND_SIGNAL] == 81 + 0.5 * 136  # n=2, S=8: 136 prices, 81 rides
    assert snaps.loc[0, Col.RULE_SHEET_ID] == 5470
    assert snaps.loc[0, Col.CUMULATIVE_SURGE_PERCENT] == 12.0


def test_records_to_snapshots_refuses_bad_rows_instead_of_dropping_them() -> None:
    with pytest.raises(DataContractError, match="2 of 4 raw records are invalid"):
        records_to_snapshots(_raw())
    with pytest.raises(DataContractError, match="missing column 'hex_id'"):
        records_to_snapshots(_raw().drop(columns=[RawCol.HEX_ID]))


def test_ids_beyond_int32_are_out_of_range_row_by_row() -> None:
    frame = _snapshots().head(4).copy()
    frame[Col.SERVICE_TYPE] = [1, 2**62, 2**31, 2**31 - 1]
    frame.loc[0, Col.CITY_ID] = 2**40
    clean, rejected = validate_snapshots(frame)
    assert rejected["reason"].tolist() == ["out_of_range:city_id", "out_of_range:service_type",
                                           "out_of_range:service_type"]
    assert clean[Col.SERVICE_TYPE].tolist() == [2**31 - 1]
    raw = pd.DataFrame([{RawCol.HEX_ID: int(frame[Col.HEXAGON].iloc[0]), RawCol.SERVICE_TYPE: s,
                         RawCol.CITY_ID: 1, RawCol.CLICKHOUSE_TIME: "2025-11-19T10:00:00Z",
                         RawCol.SURGE_PERCENT: 1.0, RawCol.SURGE_ABSOLUTE: 1.0,
                         RawCol.CUMULATIVE_SURGE_PERCENT: 1.0,
                         RawCol.CUMULATIVE_SURGE_ABSOLUTE: 1.0, RawCol.RULE_SHEET_ID: 1}
                        for s in (1, 2**62)])
    clean, rejected = validate_raw_records(raw)
    assert rejected["reason"].tolist() == ["out_of_range:service_type"] and len(clean) == 1
