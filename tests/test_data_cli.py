"""`pulsar data generate | convert | validate` end to end on real files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pulsar_cli.main import main


def test_generate_convert_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "export.csv"
    assert main(["data", "generate", str(export), "--hexagons", "10", "--days", "1"]) == 0
    out = tmp_path / "snaps.parquet"
    rejected = tmp_path / "rejected"
    assert main(["data", "convert", str(export), "-o", str(out),
                 "--rejected-dir", str(rejected)]) == 0
    assert len(pd.read_parquet(out)) > 0
    assert main(["data", "validate", str(out)]) == 0
    assert "rejected 0" in capsys.readouterr().out


def test_validate_reports_rejections_and_errors(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    snaps = tmp_path / "s.parquet"
    assert main(["data", "generate", str(snaps), "--hexagons", "5", "--days", "1"]) == 0
    frame = pd.read_parquet(snaps)
    frame.loc[0, "acceptance_rate"] = 3.0
    frame.to_parquet(snaps)
    assert main(["data", "validate", str(snaps), "--rejected-dir", str(tmp_path / "r")]) == 1
    assert "out_of_range:acceptance_rate: 1" in capsys.readouterr().out
    assert len(pd.read_parquet(tmp_path / "r" / "rejected.parquet")) == 1
    assert main(["data", "validate", str(tmp_path / "missing.parquet")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
