"""The hexagon map shared by the demo's report and the predictor's live page (inline SVG, no
network assets).

Colour is the expected change in %, on a symmetric-log scale (linear within +-10%) clipped at the
95th percentile of |change|: hexagons leaving the demand floor (8 -> 286: +3,475%) neither set
the scale nor wash a busy hexagon's +40% out to white. The legend shows real values and says how
many hexagons lie beyond the clip. Opacity is the
forecast's confidence. Every horizon gets its own layer and legend; buttons switch between them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

import h3

MAP_WIDTH = 640
MAP_HEIGHT = 480
ROBUST_QUANTILE = 0.95
LINEAR_PCT = 10.0  # the symmetric-log scale is linear inside +-10%
LOW_CONFIDENCE = 0.5
CSS = """
.hexmap svg{border:1px solid #ddd;background:#fafafa}.hexmap polygon{stroke:#fff;stroke-width:.6}
.hexmap button{margin:0 .3em .5em 0;padding:.2em .8em}.hexmap button[aria-pressed=true]{
font-weight:bold;background:#333;color:#fff}.legend span.swatch{display:inline-block;width:2.4em;
height:1em;vertical-align:middle;border:1px solid #ccc}.legend span.value{margin:0 .6em 0 .2em}
"""
# Show one horizon layer of the map that holds the clicked button (no network, no framework);
# a link ending in #horizon=60 opens every map at 60 minutes.
SCRIPT = """
function pulsarHorizon(button){var map=button.closest('.hexmap');
map.querySelectorAll('.horizon').forEach(function(layer){
layer.hidden=layer.dataset.horizon!==button.dataset.horizon;});
map.querySelectorAll('button').forEach(function(b){b.setAttribute('aria-pressed',b===button);});
history.replaceState(null,'','#horizon='+button.dataset.horizon);}
document.addEventListener('DOMContentLoaded',function(){
var m=location.hash.match(/^#horizon=([0-9.]+)$/);if(!m)return;
document.querySelectorAll('.hexmap button[data-horizon="'+m[1]+'"]').forEach(pulsarHorizon);});
"""


def change_label(change_pct: float | None) -> str:
    """The one rounding of a change in %: whole percent, one decimal below 10%."""
    if change_pct is None or not math.isfinite(change_pct):
        return "n/a"
    return f"{change_pct:+.0f}%" if abs(change_pct) >= 10 else f"{change_pct:+.1f}%"


def colour_limit(changes: Iterable[float | None]) -> float:
    """The scale's end: the 95th percentile of |change| (at least 1%), robust to outliers.

    Falls stop at -100% (demand cannot go below zero), so the falling side ends at
    min(limit, 100%)."""
    values = sorted(abs(c) for c in changes if c is not None and math.isfinite(c))
    if not values:
        return 1.0
    index = min(len(values) - 1, math.ceil(ROBUST_QUANTILE * len(values)) - 1)
    return max(values[index], 1.0)


def _end(limit: float, sign: float) -> float:
    return limit if sign >= 0 else min(limit, 100.0)


def position(change_pct: float, limit: float) -> float:
    """-1..1 on the symmetric-log scale whose ends are -min(limit, 100%) and +limit."""
    limit = _end(limit, change_pct)
    t = math.log1p(abs(change_pct) / LINEAR_PCT) / math.log1p(limit / LINEAR_PCT)
    return math.copysign(min(1.0, t), change_pct)


def change_at(t: float, limit: float) -> float:
    """The change in % that sits at position t (the inverse of `position`)."""
    end = _end(limit, t)
    return math.copysign(LINEAR_PCT * math.expm1(abs(t) * math.log1p(end / LINEAR_PCT)), t)


def colour(change_pct: float | None, limit: float) -> str:
    """Blue (falling) - white - red (rising), full colour at +-limit; grey without a change."""
    if change_pct is None or not math.isfinite(change_pct):
        return "#bbbbbb"
    t = position(change_pct, limit)
    fade = round(255 * (1 - abs(t)))
    return f"#ff{fade:02x}{fade:02x}" if t >= 0 else f"#{fade:02x}{fade:02x}ff"


def legend(limit: float, beyond: int) -> str:
    """Seven swatches labelled with the real changes they stand for."""
    stops = [change_at(t, limit) for t in (-1.0, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3, 1.0)]
    swatches = "".join(f'<span class="swatch" style="background:{colour(s, limit)}"></span>'
                       f'<span class="value">{change_label(s) if s else "0%"}</span>'
                       for s in stops)
    extra = (f"{beyond} hexagon{'s' if beyond != 1 else ''} beyond "
             f"{change_label(limit)} drawn at full colour. " if beyond else "")
    return (f'<p class="legend" data-limit="{limit:.1f}">{swatches}<br>{extra}Faded: confidence '
            f"below {LOW_CONFIDENCE:g}. Hover a hexagon for its numbers.</p>")


def _project(hexagons: list[str]) -> dict[str, str]:
    """H3 boundaries -> SVG points, equirectangular with cos(latitude) on x, fit to the map."""
    rings = {h: h3.cell_to_boundary(h) for h in hexagons}
    lats = [lat for ring in rings.values() for lat, _ in ring]
    lngs = [lng for ring in rings.values() for _, lng in ring]
    squeeze = math.cos(math.radians((min(lats) + max(lats)) / 2))
    width = max((max(lngs) - min(lngs)) * squeeze, 1e-9)
    height = max(max(lats) - min(lats), 1e-9)
    scale = min((MAP_WIDTH - 20) / width, (MAP_HEIGHT - 20) / height)
    return {h: " ".join(f"{10 + (lng - min(lngs)) * squeeze * scale:.1f},"
                        f"{10 + (max(lats) - lat) * scale:.1f}" for lat, lng in ring)
            for h, ring in rings.items()}


def _title(item: dict[str, Any]) -> str:
    confidence = item.get("confidence")
    return (f"{item['hexagon']} service {item['service_type']}: "
            f"{change_label(item['change_pct'])} in {item['horizon_minutes']:g} min "
            f"({_round(item.get('current'))} -> {_round(item.get('value'))}, confidence "
            f"{'n/a' if confidence is None else f'{confidence:.2f}'}, {item.get('model', '?')})")


def _round(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _layer(items: list[dict[str, Any]], shapes: dict[str, str]) -> tuple[str, str]:
    limit = colour_limit(i["change_pct"] for i in items)
    polygons = []
    for item in sorted(items, key=lambda i: i["hexagon"]):
        confidence = item.get("confidence")
        opacity = 1.0 if confidence is None or confidence >= LOW_CONFIDENCE else 0.35
        polygons.append(f'<polygon points="{shapes[item["hexagon"]]}" '
                        f'fill="{colour(item["change_pct"], limit)}" fill-opacity="{opacity:g}" '
                        f'data-hexagon="{item["hexagon"]}"><title>'
                        f"{html.escape(_title(item))}</title></polygon>")
    beyond = sum(1 for i in items if i["change_pct"] is not None
                 and not -_end(limit, -1) <= i["change_pct"] <= limit)
    return "".join(polygons), legend(limit, beyond)


def hexagon_map(service_type: int, items: list[dict[str, Any]], shown: float = 30.0) -> str:
    """One switchable layer per horizon, one <polygon> per forecast hexagon in each."""
    if not items:
        return f"<p>No forecasts for service type {service_type}.</p>"
    horizons = sorted({float(i["horizon_minutes"]) for i in items})
    first = shown if shown in horizons else horizons[0]
    shapes = _project(sorted({i["hexagon"] for i in items}))
    buttons, layers = [], []
    for horizon in horizons:
        polygons, key = _layer([i for i in items if i["horizon_minutes"] == horizon], shapes)
        pressed = "true" if horizon == first else "false"
        buttons.append(f'<button type="button" data-horizon="{horizon:g}" aria-pressed="{pressed}"'
                       f' onclick="pulsarHorizon(this)">{horizon:g} min</button>')
        layers.append(f'<div class="horizon" data-horizon="{horizon:g}"'
                      f'{"" if horizon == first else " hidden"}><svg class="map" '
                      f'xmlns="http://www.w3.org/2000/svg" data-service-type="{service_type}" '
                      f'data-horizon="{horizon:g}" width="{MAP_WIDTH}" height="{MAP_HEIGHT}" '
                      f'viewBox="0 0 {MAP_WIDTH} {MAP_HEIGHT}">{polygons}</svg>{key}</div>')
    return (f'<div class="hexmap" data-service-type="{service_type}"><div>Horizon: '
            + "".join(buttons) + "</div>" + "".join(layers) + "</div>")


def risers(items: list[dict[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    """The forecasts with the largest expected absolute increase (value - current)."""
    rising = [i for i in items if i.get("value") is not None and i.get("current") is not None
              and i["value"] > i["current"]]
    return sorted(rising, key=lambda i: (i["current"] - i["value"], i["hexagon"]))[:limit]
