"""The page shell shared by the demo's report and the live page: one stylesheet, the horizon
switch's script, and one heading and map per service type."""

from __future__ import annotations

import html
from typing import Any

from pulsar_core.pages.hexmap import CSS as MAP_CSS
from pulsar_core.pages.hexmap import SCRIPT, hexagon_map

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td.text{text-align:left}tr.served td{font-weight:bold;
background:#fff6d5}img{max-width:100%}
""" + MAP_CSS


def map_sections(maps: dict[int, list[dict[str, Any]]],
                 missing: dict[int, list[dict[str, str]]]) -> list[str]:
    """One heading and switchable map per service type (the report's and the live page's)."""
    parts = []
    for service in sorted(set(maps) | set(missing)):
        items, without = maps.get(service, []), len(missing.get(service, []))
        hexagons = len({i["hexagon"] for i in items})
        parts.append(f"<h3>Service type {service}: {hexagons} hexagons"
                     + (f", {without} without a forecast" if without else "")
                     + "</h3>" + hexagon_map(service, items))
    return parts


def page(title: str, body: list[str], head: str = "") -> str:
    """A whole self-contained HTML page."""
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8">{head}<title>{html.escape(title)}'
            f"</title><style>{CSS}</style><script>{SCRIPT}</script></head><body>"
            + "\n".join(body) + "</body></html>\n")
