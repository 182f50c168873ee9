"""`./.pulsar/report.html`: one self-contained page (inline CSS + SVG, no network assets).

An SVG map per service type of the H3 hexagons coloured by expected change, the replayed
hexagons that got no forecast with the predictor's reason, the top rising hexagons per horizon,
the trainer's forecast-vs-actual plot and the evaluation table.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import h3

MAP_WIDTH = 640
MAP_HEIGHT = 480
CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td.text{text-align:left}
svg.map{border:1px solid #ddd;background:#fafafa}polygon{stroke:#fff;stroke-width:.6}
.legend span{display:inline-block;width:2em;height:1em;vertical-align:middle}
img{max-width:100%}
"""


@dataclass
class ReportData:
    """What the page shows: API answers (as received) plus the training run's evaluation."""

    model: dict[str, Any]
    maps: dict[int, list[dict[str, Any]]]  # service type -> POST /v1/forecast items at 30 min
    top: dict[float, list[dict[str, Any]]]  # horizon -> the top rising items
    missing: dict[int, list[dict[str, str]]] = field(default_factory=dict)  # {hexagon, reason}
    evaluation_csv: str | None = None
    plot_png: bytes | None = None
    notes: list[str] = field(default_factory=list)
    summary: str = ""  # the console line on map coverage (LiveMap.summary)


def change_label(change_pct: float | None) -> str:
    """The one formatting of a change used in titles and tables (tests parse it back)."""
    return "n/a" if change_pct is None else f"{change_pct:+.2f}%"


def colour(change_pct: float | None, scale: float) -> str:
    """Blue (falling) - white - red (rising); grey when there is no change to show."""
    if change_pct is None or scale <= 0:
        return "#bbbbbb"
    t = max(-1.0, min(1.0, change_pct / scale))
    fade = round(255 * (1 - abs(t)))
    return f"#ff{fade:02x}{fade:02x}" if t >= 0 else f"#{fade:02x}{fade:02x}ff"


def _project(items: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[tuple[float, float]]]]:
    """H3 boundaries -> SVG points, equirectangular with cos(latitude) on x, fit to the map."""
    import math

    shapes = [(item, h3.cell_to_boundary(item["hexagon"])) for item in items]
    lats = [lat for _, ring in shapes for lat, _ in ring]
    lngs = [lng for _, ring in shapes for _, lng in ring]
    squeeze = math.cos(math.radians((min(lats) + max(lats)) / 2))
    width = max((max(lngs) - min(lngs)) * squeeze, 1e-9)
    height = max(max(lats) - min(lats), 1e-9)
    scale = min((MAP_WIDTH - 20) / width, (MAP_HEIGHT - 20) / height)
    return [(item, [(10 + (lng - min(lngs)) * squeeze * scale, 10 + (max(lats) - lat) * scale)
                    for lat, lng in ring]) for item, ring in shapes]


def hexagon_map(service_type: int, items: list[dict[str, Any]]) -> str:
    """One <polygon> per forecast hexagon; its <title> names the hexagon and the change."""
    if not items:
        return f"<p>No forecasts for service type {service_type}.</p>"
    changes = [abs(i["change_pct"]) for i in items if i["change_pct"] is not None]
    scale = max(changes, default=0.0)
    polygons = []
    for item, points in _project(items):
        title = (f"{item['hexagon']} service {item['service_type']}: "
                 f"{change_label(item['change_pct'])} in {item['horizon_minutes']:g} min")
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        polygons.append(f'<polygon points="{coords}" fill="{colour(item["change_pct"], scale)}"'
                        f' data-hexagon="{item["hexagon"]}"><title>{html.escape(title)}'
                        "</title></polygon>")
    legend = (f'<p class="legend"><span style="background:#0000ff"></span> -{scale:.1f}% '
              f'<span style="background:#ffffff;border:1px solid #ccc"></span> 0 '
              f'<span style="background:#ff0000"></span> +{scale:.1f}%</p>')
    return (f'<svg class="map" '
            f'xmlns="http://www.w3.org/2000/svg" data-service-type="{service_type}" '
            f'width="{MAP_WIDTH}" height="{MAP_HEIGHT}" viewBox="0 0 {MAP_WIDTH} {MAP_HEIGHT}">'
            + "".join(polygons) + "</svg>" + legend)


def missing_section(data: ReportData) -> str:
    """Replayed hexagons without a forecast: counts by reason, then every hexagon and its reason."""
    rows = [(m["hexagon"], service, m["reason"]) for service, items in sorted(data.missing.items())
            for m in items]
    shown = sum(len(items) for items in data.maps.values())
    head = (f"<h2>No forecast</h2><p>{shown} of {shown + len(rows)} replayed series are on the "
            f"map; {len(rows)} got no forecast from the predictor.</p>")
    if not rows:
        return head
    counts: dict[tuple[int, str], int] = {}
    for _, service, reason in rows:
        counts[service, reason] = counts.get((service, reason), 0) + 1
    summary = table(["service", "hexagons", "reason"],
                    [(s, n, r) for (s, r), n in sorted(counts.items())])
    listed = "".join(f'<tr data-hexagon="{html.escape(h)}" data-service-type="{s}">'
                     f'<td class=text>{html.escape(h)}</td><td>{s}</td>'
                     f"<td class=text>{html.escape(r)}</td></tr>" for h, s, r in rows)
    return (head + summary + '<table class="missing"><tr><th>hexagon</th><th>service</th>'
            f"<th>reason</th></tr>{listed}</table>")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: int = 0) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=text" if i < text_columns or i == len(row) - 1 else ""}>'
                         f"{html.escape(str(v))}</td>" for i, v in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def top_table(items: list[dict[str, Any]]) -> str:
    rows = [(i["hexagon"], i["service_type"], _num(i["current"]), _num(i["value"]),
             change_label(i["change_pct"]), _num(i["confidence"]), i["model"], i["explanation"])
            for i in items]
    return table(["hexagon", "service", "now", "forecast", "change", "confidence", "model",
                  "explanation"], rows, text_columns=1)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def evaluation_table(csv_text: str) -> str:
    import csv
    import io

    rows = list(csv.reader(io.StringIO(csv_text)))
    return table(rows[0], rows[1:], text_columns=1) if rows else "<p>Empty evaluation.</p>"


def render(data: ReportData) -> str:
    """The whole page as one string."""
    model = data.model
    parts = [f"<h1>Pulsar demo: {html.escape(str(model.get('name')))} version "
             f"{html.escape(str(model.get('version')))}</h1>",
             f"<p>run {html.escape(str(model.get('run_id')))}</p>",
             "<h2>Expected change of demand in 30 minutes</h2>"]
    for service in sorted(set(data.maps) | set(data.missing)):
        items, without = data.maps.get(service, []), len(data.missing.get(service, []))
        parts.append(f"<h3>Service type {service}: {len(items)} hexagons"
                     + (f", {without} without a forecast (listed below)" if without else "")
                     + "</h3>" + hexagon_map(service, items))
    parts.append(missing_section(data))
    for horizon, items in sorted(data.top.items()):
        parts.append(f"<h2>Top rising hexagons in {horizon:g} minutes</h2>{top_table(items)}")
    parts.append("<h2>Forecast vs actual (hold-out)</h2>")
    if data.plot_png is not None:
        encoded = base64.b64encode(data.plot_png).decode()
        parts.append(f'<img alt="forecast vs actual" src="data:image/png;base64,{encoded}">')
    else:
        parts.append("<p>The training run logged no forecast-vs-actual plot.</p>")
    parts.append("<h2>Evaluation (hold-out)</h2>")
    parts.append(evaluation_table(data.evaluation_csv) if data.evaluation_csv
                 else "<p>The training run logged no evaluation table.</p>")
    parts += [f"<p>{html.escape(note)}</p>" for note in data.notes]
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Pulsar demo</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
