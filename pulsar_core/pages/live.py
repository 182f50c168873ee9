"""The predictor's GET /map: its current live forecasts on the report's map."""

from __future__ import annotations

import html
from typing import Any

from pulsar_core.pages.shell import map_sections, page


def live_page(model: dict[str, Any], maps: dict[int, list[dict[str, Any]]],
              refresh_seconds: int = 60) -> str:
    """The live forecasts per service type (POST /v1/forecast items), reloaded by the browser
    (the chosen horizon survives the reload in the URL's #horizon=...)."""
    count = sum(len({i["hexagon"] for i in items}) for items in maps.values())
    issued = max((str(i["issued_for"]) for items in maps.values() for i in items), default="")
    parts = [f"<h1>Pulsar live: {html.escape(str(model.get('name')))} version "
             f"{html.escape(str(model.get('version')))}</h1>",
             f'<p data-live-hexagons="{count}">What drivers are told now: {count} hexagon '
             f"series with a live forecast, newest data {html.escape(issued) or 'none yet'}; "
             f"this page reloads every {refresh_seconds} s.</p>"]
    if not maps:
        parts.append("<p>No live forecasts yet: the predictor has received no live signals "
                     "(NATS) it can forecast from.</p>")
    parts += map_sections(maps, {})
    return page("Pulsar live", parts, f'<meta http-equiv="refresh" content="{refresh_seconds}">')
