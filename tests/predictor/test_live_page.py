"""GET / and /map: the predictor's live forecasts on the report's map, self-contained, and the
same page rendered by a real headless browser (screenshot kept as a test artifact)."""

import json
import re
import xml.etree.ElementTree as ET

import nats
from pulsar_predictor import create_app

from pulsar_core.events import signals_subject
from tests.predictor.client import eventually, serving
from tests.predictor.payloads import as_rows, recent
from tests.predictor.test_api_forecast import _ready, settings  # noqa: F401 (fixture)
from tests.test_report_browser import ARTIFACTS, browse, chromium, visible_maps

SVG = "{http://www.w3.org/2000/svg}"


async def test_live_page_maps_every_live_series_at_every_horizon(settings, tiny_snapshots,  # noqa: F811
                                                                 tmp_path) -> None:
    frame = recent(tiny_snapshots)
    async with serving(create_app(settings)) as client:
        await _ready(client)
        runtime = client._transport.app.state.runtime
        empty = await client.get("/map")
        assert empty.status_code == 200 and "No live forecasts yet" in empty.text
        await eventually(lambda: runtime.feed.connected)
        publisher = await nats.connect(settings.nats_url)
        rows = as_rows(frame)
        for start in range(0, len(rows), 500):  # under NATS's payload limit
            await publisher.publish(signals_subject("tehran", "all"),
                                    json.dumps(rows[start:start + 500]).encode())
        await publisher.flush()
        await publisher.close()
        await eventually(lambda: runtime.service.live is not None
                         and runtime.service.live.buffer_version == runtime.buffer.version
                         and runtime.buffer.row_count() == len(frame))
        page = await client.get("/map")
        root = await client.get("/")
        metrics = (await client.get("/metrics")).text
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert root.text == page.text
    assert 'pulsar_requests_total{endpoint="/map",status="200"} 2.0' in metrics
    html = page.text
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # no network assets
    assert '<meta http-equiv="refresh"' in html
    series = frame.groupby("service_type")["hexagon"].nunique().to_dict()
    for block in re.findall(r"<svg .*?</svg>", html, flags=re.S):
        svg = ET.fromstring(block)
        assert svg.get("data-horizon") in {"7.5", "30", "60", "90"}
        polygons = svg.findall(f"{SVG}polygon")
        assert len(polygons) == series[int(svg.get("data-service-type"))]
    assert f'data-live-hexagons="{sum(series.values())}"' in html

    chromium()  # skips with a message when no browser is installed
    path = tmp_path / "live.html"
    path.write_text(html, encoding="utf-8")
    done = browse(path.as_uri() + "#horizon=60", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    shown = visible_maps(done.stdout)
    assert sorted(shown) == sorted(series)
    for service, (horizon, svg, legend) in shown.items():
        assert horizon == "60" and 'class="legend"' in legend
        assert len(svg.findall(f"{SVG}polygon")) == series[service]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "live.png"
    shot.unlink(missing_ok=True)
    done = browse(path.as_uri(), f"--screenshot={shot}", "--window-size=1200,1800")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]

