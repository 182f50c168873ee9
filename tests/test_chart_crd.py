"""The chart's CRD is a byte-for-byte copy of crds/ (scripts/sync_chart_crd.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sync_chart_crd.py"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def copy_tree(tmp_path: Path) -> Path:
    """A scratch repository with the real sources and the chart's generated files."""
    for folder in ("crds", "charts/pulsar/crds", "charts/pulsar/files"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def test_chart_crd_matches_the_source() -> None:
    assert (ROOT / "crds" / "surgemodels.forecasting.pulsar.dev.yaml").exists()
    result = run_script("--check")
    assert result.returncode == 0, result.stderr


def test_check_names_a_drifted_file_and_sync_repairs_it(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    chart_crd = root / "charts/pulsar/crds/surgemodels.forecasting.pulsar.dev.yaml"
    chart_crd.write_text(chart_crd.read_text().replace("shortNames: [sm]", "shortNames: [s]"))
    result = run_script("--check", "--root", str(root))
    assert result.returncode == 1
    assert "surgemodels.forecasting.pulsar.dev.yaml: differs" in result.stderr
    assert run_script("--root", str(root)).returncode == 0
    assert run_script("--check", "--root", str(root)).returncode == 0
    assert chart_crd.read_bytes() == (root / "crds" / chart_crd.name).read_bytes()


def test_missing_and_stale_copies_are_drift(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    (root / "charts/pulsar/crds/surgemodels.forecasting.pulsar.dev.yaml").unlink()
    (root / "charts/pulsar/crds/old.yaml").write_text("kind: Leftover\n")
    result = run_script("--check", "--root", str(root))
    assert result.returncode == 1
    assert "surgemodels.forecasting.pulsar.dev.yaml: missing" in result.stderr
    assert "old.yaml: stale" in result.stderr
    run_script("--root", str(root))
    assert not (root / "charts/pulsar/crds/old.yaml").exists()


def test_no_source_is_an_error_not_a_pass(tmp_path: Path) -> None:
    (tmp_path / "crds").mkdir()
    result = run_script("--check", "--root", str(tmp_path))
    assert result.returncode == 2
    assert "no CRD in" in result.stderr
