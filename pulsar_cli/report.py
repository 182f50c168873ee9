"""`./.pulsar/report.html`: one self-contained page (inline CSS, SVG and script; no network).

Per service type a map of the H3 hexagons coloured by expected change with a horizon switch
(`pulsar_core.pages`, the predictor's live page draws the same maps), the replayed hexagons that
got no forecast with the predictor's reason, the top risers per horizon ranked by expected
absolute increase, the trainer's forecast-vs-actual plot (one panel per evaluable horizon) and
the evaluation per horizon: the served model marked, each model's MAE beside the strongest
baseline's.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pulsar_core.evaluation import EvaluationReport, served_label
from pulsar_core.pages.hexmap import change_label, risers
from pulsar_core.pages.shell import map_sections, page

__all__ = ["ReportData", "render"]


@dataclass
class ReportData:
    """What the page shows: API answers (as received) plus the training run's evaluation."""

    model: dict[str, Any]
    maps: dict[int, list[dict[str, Any]]]  # service type -> POST /v1/forecast items, all horizons
    missing: dict[int, list[dict[str, str]]] = field(default_factory=dict)  # {hexagon, reason}
    evaluation: EvaluationReport | None = None
    plot_png: bytes | None = None
    notes: list[str] = field(default_factory=list)
    summary: str = ""  # the console line on map coverage (LiveMap.summary)

    def horizons(self) -> list[float]:
        return sorted({float(i["horizon_minutes"]) for items in self.maps.values() for i in items})

    def top(self, horizon: float, limit: int = 10) -> list[dict[str, Any]]:
        """Every service's forecasts at one horizon, largest expected absolute increase first."""
        return risers([i for items in self.maps.values() for i in items
                       if i["horizon_minutes"] == horizon], limit)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: int = 0,
          row_classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        (f'<tr class="{row_classes[n]}">' if n < len(row_classes) and row_classes[n] else "<tr>")
        + "".join(f'<td{" class=text" if i < text_columns or i == len(row) - 1 else ""}>'
                  f"{html.escape(str(v))}</td>" for i, v in enumerate(row)) + "</tr>"
        for n, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def top_table(items: list[dict[str, Any]]) -> str:
    rows = [(i["hexagon"], i["service_type"], _num(i["current"]), _num(i["value"]),
             f"+{_num(i['value'] - i['current'])}", change_label(i["change_pct"]),
             _num(i["confidence"], 2) + (" (low)" if i.get("low_confidence") else ""),
             i["model"], i["explanation"]) for i in items]
    return table(["hexagon", "service", "now", "forecast", "increase", "change", "confidence",
                  "model", "explanation"], rows, text_columns=1)


def evaluation_section(report: EvaluationReport) -> str:
    """Per horizon: every model's rounded metrics, its MAE / the strongest baseline's, the
    served model marked; horizons without a target say so instead of showing numbers."""
    parts = []
    for horizon in sorted(report.table.horizon_minutes.unique()):
        rows = report.table[report.table.horizon_minutes == horizon]
        served = served_label(report.served.get(horizon, "baseline:persistence"))
        if not rows.evaluable.any():
            parts.append(f"<h3>{horizon:g} minutes: not evaluable</h3><p>No target period "
                         f"{horizon:g} minutes ahead exists in the hold-out (runs too short); "
                         f"{html.escape(served)} answers this horizon.</p>")
            continue
        name, best = report.best_baseline(horizon)
        body, classes = [], []
        for rec in rows[rows.model != "served"].itertuples():
            ratio = rec.mae / best if best and math.isfinite(rec.mae) else math.nan
            marks = (" (served)" if rec.model == served else "") + (
                " (strongest baseline)" if rec.model == name else "")
            body.append((_num(rec.mae, 2), _num(rec.rmse, 2),
                         _num(100 * rec.directional_accuracy, 0) + "%", _num(ratio, 2),
                         f"{rec.coverage:,}", rec.model + marks))
            classes.append("served" if rec.model == served else "")
        served_mae = report.row(horizon, "served").mae
        parts.append(f'<h3 data-horizon="{horizon:g}">{horizon:g} minutes: served '
                     f"{html.escape(served)}, MAE {_num(served_mae, 2)} = "
                     f"{_num(served_mae / best if best else math.nan, 2)} x the strongest "
                     f"baseline ({html.escape(name)}, {_num(best, 2)})</h3>")
        parts.append(table(["MAE", "RMSE", "direction right", "MAE / strongest baseline",
                            "rows", "model"], body, row_classes=classes))
    return "".join(parts) + (f"<p>Split: {html.escape(report.split)}; lower MAE is better, "
                             "a ratio under 1 beats every simple baseline.</p>")


def missing_section(data: ReportData) -> str:
    """Replayed hexagons without a forecast: counts by reason, then every hexagon and its reason."""
    rows = [(m["hexagon"], service, m["reason"]) for service, items in sorted(data.missing.items())
            for m in items]
    shown = sum(len({i["hexagon"] for i in items}) for items in data.maps.values())
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


def render(data: ReportData) -> str:
    """The whole report as one string."""
    model = data.model
    parts = [f"<h1>Pulsar demo: {html.escape(str(model.get('name')))} version "
             f"{html.escape(str(model.get('version')))}</h1>",
             f"<p>run {html.escape(str(model.get('run_id')))}</p>",
             "<h2>Expected change of demand</h2>", *map_sections(data.maps, data.missing),
             missing_section(data)]
    for horizon in data.horizons():
        parts.append(f'<h2 data-risers="{horizon:g}">Top risers in {horizon:g} minutes '
                     f"(largest expected increase)</h2>{top_table(data.top(horizon))}")
    parts.append("<h2>Forecast vs actual (hold-out, one panel per horizon)</h2>")
    if data.plot_png is not None:
        encoded = base64.b64encode(data.plot_png).decode()
        parts.append(f'<img alt="forecast vs actual" src="data:image/png;base64,{encoded}">')
    else:
        parts.append("<p>The training run logged no forecast-vs-actual plot.</p>")
    parts.append("<h2>Evaluation (hold-out)</h2>")
    parts.append(evaluation_section(data.evaluation) if data.evaluation is not None
                 else "<p>The training run logged no evaluation.</p>")
    parts += [f"<p>{html.escape(note)}</p>" for note in data.notes]
    return page("Pulsar demo", parts)
