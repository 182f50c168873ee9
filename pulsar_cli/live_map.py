"""The report's map data: a forecast for every replayed series, or the predictor's reason why not.

The predictor answers live requests from a forecast table it recomputes in the background after
its buffer changes, so right after a replay the table may trail the newest rows by a refresh
(a series that arrived last is then missing or anchored at an older period). `collect_map` asks
POST /v1/forecast for every replayed hexagon until every forecast is anchored at its series'
newest replayed period and the answer has not changed for a few seconds; whatever still has no
forecast is listed with the reason the predictor gives. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pulsar_core.contract import Col

CHUNK = 1000  # hexagons per request, well under the predictor's PULSAR_MAX_HEXAGONS default


class MapError(RuntimeError):
    """The predictor refused a map request (the message names the URL and its answer)."""


@dataclass
class LiveMap:
    """Per service type: the forecasts at every horizon and the replayed hexagons without one."""

    forecasts: dict[int, list[dict[str, Any]]]
    missing: dict[int, list[dict[str, str]]]
    settled: bool = True
    notes: list[str] = field(default_factory=list)

    def key(self) -> tuple[frozenset[tuple[int, str]], frozenset[tuple[int, str, str]]]:
        """What must stay equal between two polls: who has a forecast, who is missing why."""
        return (frozenset((s, f["hexagon"]) for s, items in self.forecasts.items()
                          for f in items),
                frozenset((s, m["hexagon"], m["reason"]) for s, items in self.missing.items()
                          for m in items))

    def reasons(self) -> Counter[str]:
        return Counter(m["reason"] for items in self.missing.values() for m in items)

    def summary(self, replayed: int) -> str:
        """One console line: how many replayed series have a forecast, and why the rest not."""
        shown = sum(len({f["hexagon"] for f in items}) for items in self.forecasts.values())
        line = f"map: {shown} of {replayed} replayed series have a forecast"
        missing = sum(self.reasons().values())
        if missing:
            why = "; ".join(f"{count} {reason}" for reason, count in self.reasons().most_common())
            line += f", {missing} have none ({why}); the report lists them"
        return line


def newest_periods(replayed: pd.DataFrame) -> dict[int, dict[str, pd.Timestamp]]:
    """service type -> H3 string -> the newest replayed period_start of that series."""
    import h3

    newest = replayed.groupby([Col.SERVICE_TYPE, Col.HEXAGON])[Col.PERIOD_START].max()
    out: dict[int, dict[str, pd.Timestamp]] = {}
    for (service, hexagon), start in newest.items():
        out.setdefault(int(service), {})[h3.int_to_str(int(hexagon))] = pd.Timestamp(start)
    return out


def post_json(url: str, body: dict[str, Any], timeout: float = 30.0) -> Any:
    """POST JSON; a non-200 answer is a MapError naming the URL and the error body."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise MapError(f"POST {url} answered {error.code}: {error.read()[:500]!r}") from error


def poll_map(url: str, newest: dict[int, dict[str, pd.Timestamp]],
             horizons: Sequence[float]) -> LiveMap:
    """One POST /v1/forecast per service type (in chunks) for every replayed hexagon."""
    forecasts: dict[int, list[dict[str, Any]]] = {}
    missing: dict[int, list[dict[str, str]]] = {}
    for service, series in sorted(newest.items()):
        hexagons = sorted(series)
        for start in range(0, len(hexagons), CHUNK):
            answer = post_json(f"{url}/v1/forecast", {
                "hexagons": hexagons[start:start + CHUNK], "service_type": service,
                "horizons_minutes": list(horizons)})
            forecasts.setdefault(service, []).extend(answer["forecasts"])
            missing.setdefault(service, []).extend(answer["missing"])
    return LiveMap(forecasts, missing)


def is_fresh(live: LiveMap, newest: dict[int, dict[str, pd.Timestamp]]) -> bool:
    """Every forecast is anchored at its series' newest replayed period."""
    return all(pd.Timestamp(f["issued_for"]) == newest[service].get(f["hexagon"])
               for service, items in live.forecasts.items() for f in items)


def collect_map(url: str, replayed: pd.DataFrame, horizons: Sequence[float], *,
                timeout: float = 60.0,
                poll: float = 1.0, stable_polls: int = 3) -> LiveMap:
    """Poll until the map is fresh and unchanged for `stable_polls` answers, or `timeout`."""
    newest = newest_periods(replayed)
    deadline = time.monotonic() + timeout
    history: list[LiveMap] = []
    while True:
        live = poll_map(url, newest, horizons)
        if is_fresh(live, newest):
            history.append(live)
            recent = history[-stable_polls:]
            if len(recent) == stable_polls and len({m.key() for m in recent}) == 1:
                return live
        else:
            history.clear()
        if time.monotonic() > deadline:
            live.settled = False
            live.notes.append(f"The predictor's live forecasts had not settled {timeout:g} s "
                              "after the replay; the map shows its last answer.")
            return live
        time.sleep(poll)
