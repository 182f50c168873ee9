"""The real Tehran snapshots load cleanly through the same path as any other input."""

from __future__ import annotations

from pathlib import Path

from pulsar_core.contract import SNAPSHOT_DTYPES, Col
from pulsar_core.data.loading import load_snapshots


def test_real_file_loads_without_rejections(real_snapshots_path: Path) -> None:
    result = load_snapshots(real_snapshots_path)
    snaps, report = result.snapshots, result.rejected
    assert report.counts == {}
    assert report.rows_read == report.rows_kept == len(snaps) == 510_718
    assert snaps.dtypes.astype(str).to_dict() == SNAPSHOT_DTYPES
    assert not snaps.duplicated([Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]).any()
    assert snaps[Col.HEXAGON].nunique() == 4_052


def test_real_file_scope_filters_push_down(real_snapshots_path: Path) -> None:
    result = load_snapshots(real_snapshots_path, city_id=1, service_type_id=7)
    assert set(result.snapshots[Col.SERVICE_TYPE]) == {7}
    assert result.rejected.rows_kept == len(result.snapshots) == 12_846
    # rows the pushed-down filter skipped still count as read, as out of scope (not rejected)
    report = result.rejected
    assert report.rows_read == report.rows_kept + report.out_of_scope and not report.counts
