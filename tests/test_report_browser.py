"""The report in a real headless browser (Debian's `chromium`): after its script ran, every map
shows one polygon per forecast hexagon at the chosen horizon, a legend in real values whose scale
an outlier does not stretch, and a screenshot is kept as a test artifact."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import h3
import pandas as pd
import pytest

from pulsar_cli.report import ReportData, render
from pulsar_core.evaluation import COLUMNS, EvaluationReport

ARTIFACTS = Path(os.environ.get("PULSAR_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / ".pulsar" / "test-artifacts"))
HORIZONS = (30.0, 60.0, 90.0)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no headless browser: install Debian's `chromium` (apt-get install chromium) "
                "to check the report in a real browser")


def browse(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Chromium headless, no sandbox (CI runs as root), no network but the file itself."""
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--virtual-time-budget=3000",
         "--proxy-server=127.0.0.1:9", *extra, url],
        capture_output=True, text=True, timeout=90)


def forecasts(service: int, hexagons: list[str]) -> list[dict[str, Any]]:
    items = []
    for horizon in HORIZONS:
        for n, hexagon in enumerate(hexagons):
            current = 8.0 if n == 0 else 40.0 + n
            value = 286.0 if n == 0 else current * (1 + ((n % 7) - 3) * horizon / 900)
            items.append({"hexagon": hexagon, "service_type": service, "horizon_minutes": horizon,
                          "current": current, "value": value,
                          "change_pct": 100 * (value - current) / current,
                          "confidence": 0.3 if n == 1 else 0.8, "low_confidence": n == 1,
                          "model": "cnn", "explanation": f"{value - current:+.0f} expected"})
    return items


def evaluation() -> EvaluationReport:
    rows = []
    for horizon in HORIZONS:
        for model, mae in (("persistence", 100.0), ("phase_mean", 80.0), ("cnn", 60.0),
                           ("served", 60.0)):
            rows.append({"horizon_minutes": horizon, "model": model, "mae": mae + horizon / 10,
                         "rmse": 2 * mae, "directional_accuracy": 0.61, "coverage": 1234,
                         "evaluable": True})
    return EvaluationReport(table=pd.DataFrame(rows, columns=COLUMNS),
                            served={h: "cnn" for h in HORIZONS})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, int]]:
    centre = h3.latlng_to_cell(35.6892, 51.3890, 8)
    cells = sorted(h3.grid_disk(centre, 3))  # 37 hexagons
    maps = {1: forecasts(1, cells), 2: forecasts(2, cells[:20])}
    data = ReportData(model={"name": "pulsar-demo-all", "version": "3", "run_id": "r1"},
                      maps=maps, evaluation=evaluation(),
                      missing={2: [{"hexagon": cells[30], "reason": "no live data"}]})
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render(data), encoding="utf-8")
    return path, {1: len(cells), 2: 20}


def visible_maps(dom: str) -> dict[int, tuple[str, ET.Element, str]]:
    """service type -> (horizon, svg, legend) of the layer the browser shows."""
    shown = {}
    for layer in re.findall(r'<div class="horizon"[^>]*>.*?</p></div>', dom, flags=re.S):
        if re.match(r'<div class="horizon"[^>]*\shidden', layer):
            continue
        svg = ET.fromstring(re.search(r"<svg .*?</svg>", layer, flags=re.S).group(0))
        legend = re.search(r'<p class="legend".*?</p>', layer, flags=re.S).group(0)
        shown[int(svg.get("data-service-type"))] = (svg.get("data-horizon"), svg, legend)
    return shown


@pytest.mark.parametrize("horizon", ["30", "90"])
def test_browser_shows_one_polygon_per_hexagon_and_a_robust_legend(report, horizon) -> None:
    path, hexagons = report
    suffix = "" if horizon == "30" else f"#horizon={horizon}"  # 30 is the default layer
    done = browse(path.as_uri() + suffix, "--dump-dom")
    assert done.returncode == 0 and "<svg" in done.stdout, done.stderr[-2000:]
    shown = visible_maps(done.stdout)
    assert sorted(shown) == [1, 2]
    for service, count in hexagons.items():
        layer_horizon, svg, legend = shown[service]
        assert layer_horizon == horizon
        polygons = svg.findall("{http://www.w3.org/2000/svg}polygon")
        assert len(polygons) == len({p.get("data-hexagon") for p in polygons}) == count
        # the +3,475% hexagon leaving the floor does not set the scale: the 95th percentile does
        limit = float(re.search(r'data-limit="([\d.]+)"', legend).group(1))
        assert limit < 100 and "beyond" in legend and "%" in legend
        faded = [p for p in polygons if p.get("fill-opacity") == "0.35"]
        assert len(faded) == 1  # the one low-confidence forecast


def test_browser_screenshot_is_saved_as_an_artifact(report) -> None:
    path, _ = report
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    done = browse(path.as_uri(), f"--screenshot={shot}", "--window-size=1200,2400")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_evaluation_marks_the_served_model_and_the_ratio_to_the_strongest_baseline(
        report) -> None:
    page = report[0].read_text()
    assert ("90 minutes: served cnn, MAE 69.00 = 0.78 x the strongest baseline "
            "(phase_mean, 89.00)") in page
    assert '<tr class="served"><td>69.00</td>' in page
    assert "70.98504986900991" not in page and "61%" in page
