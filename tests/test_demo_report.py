"""The demo's live path on a tiny city: real nats-server, real `pulsar serve`, report vs API."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import h3
import pandas as pd

from pulsar_cli import demo
from pulsar_cli.demo_stack import DemoStack, port_open, replay
from pulsar_cli.live_map import LiveMap, is_fresh, newest_periods, poll_map
from pulsar_cli.report import ReportData, render
from pulsar_core.contract import Col
from pulsar_core.events import signals_subject
from pulsar_core.pages.hexmap import change_label

TINY = ["--hexagons", "25", "--days", "4", "--cnn-epochs", "1"]
SVG = "{http://www.w3.org/2000/svg}"


class _Svgs(HTMLParser):
    """Collects every <svg>...</svg> block's source text (and notes any network asset)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value and not value.startswith("data:"):
                self.external.append(value)


def _maps(page: str, horizon: str = "30") -> dict[int, ET.Element]:
    """service type -> the map's layer at one horizon."""
    blocks = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    trees = [ET.fromstring(block) for block in blocks]
    return {int(tree.get("data-service-type")): tree for tree in trees
            if tree.get("data-horizon") == horizon}


def _unforecastable(frame: pd.DataFrame) -> pd.DataFrame:
    """One series the predictor rejects (negative demand) on a hexagon far from the city."""
    rows = frame[frame[Col.SERVICE_TYPE] == 2].groupby(Col.HEXAGON).tail(3).head(3).copy()
    rows[Col.HEXAGON] = h3.str_to_int(h3.latlng_to_cell(35.0, 51.0, 8))
    rows[Col.DEMAND_SIGNAL] = -5.0
    return rows


def _missing_rows(page: str) -> list[tuple[str, int, str]]:
    block = page.split('<table class="missing">', 1)[1].split("</table>", 1)[0]
    return [(h, int(s), html.unescape(r)) for h, s, r in re.findall(
        r'<tr data-hexagon="([^"]+)" data-service-type="(\d+)">.*?</td><td>\d+</td>'
        r"<td class=text>([^<]*)</td></tr>", block)]


def test_report_shows_every_replayed_series_and_matches_the_live_api(tmp_path: Path,
                                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = demo.parser().parse_args([*TINY, "--no-serve"])
    settings = demo.demo_settings(args, print)
    code, served = demo._train_and_promote(settings, args.workdir, print)
    assert code == 0 and served["registered_model"] == "pulsar-demo-all"

    with DemoStack(args.workdir) as stack:
        url = demo.start_services(stack, settings, served, print)
        frame = demo.replay_recent(stack, settings, url, 12, print)
        bad = _unforecastable(frame)
        replay(bad, stack.nats_url, signals_subject(settings.city, settings.service_type))
        replayed = pd.concat([frame, bad], ignore_index=True)
        data = demo.collect(url, settings, replayed)
        path = demo.write_report(data, args.workdir)
        answers = poll_map(url, newest_periods(replayed), [30.0])
        ports = [int(u.rsplit(":", 1)[1]) for u in (url, stack.nats_url)]
    assert not any(port_open(p) for p in ports)  # every process stopped

    page = path.read_text()
    parser = _Svgs(page)
    parser.feed(page)
    assert parser.external == []
    maps = _maps(page)
    services = sorted(int(s) for s in replayed[Col.SERVICE_TYPE].unique())
    assert services == [1, 2, 3] and sorted(maps) == services
    listed = _missing_rows(page)
    bad_hexagon = h3.int_to_str(int(bad[Col.HEXAGON].iloc[0]))
    reasons = {reason for hexagon, service, reason in listed
               if (hexagon, service) == (bad_hexagon, 2)}
    assert len(reasons) == 1 and reasons.pop().startswith("outside this model's city: more than")
    for service in services:
        series = replayed[replayed[Col.SERVICE_TYPE] == service][Col.HEXAGON].nunique()
        polygons = maps[service].findall(f"{SVG}polygon")
        missing = [m for m in listed if m[1] == service]
        assert len(polygons) + len(missing) == series, f"service {service}: something dropped"
        expected = {f["hexagon"]: f for f in answers.forecasts[service]}
        assert len(polygons) == len(expected)
        assert {(m["hexagon"], service, m["reason"]) for m in answers.missing[service]} \
            == set(missing)
        for polygon in polygons:
            forecast = expected[polygon.get("data-hexagon")]
            title = polygon.find(f"{SVG}title").text
            assert f": {change_label(forecast['change_pct'])} in 30 min" in title
            assert len(polygon.get("points").split()) in (6, 7)  # H3 hexagon or pentagon
    shown = sum(len(m.findall(f"{SVG}polygon")) for m in maps.values())
    assert f"{shown} of {shown + len(listed)} replayed series are on the map" in page
    total = replayed.groupby([Col.HEXAGON, Col.SERVICE_TYPE]).ngroups
    assert data.summary.startswith(f"map: {shown} of {total} replayed series have a forecast")
    assert "data:image/png;base64," in page  # the trainer's forecast-vs-actual plot
    for horizon in demo.HORIZONS:  # every horizon: a map layer, risers, an evaluation verdict
        assert sorted(_maps(page, f"{horizon:g}")) == services
        assert f'<h2 data-risers="{horizon:g}">' in page
        assert re.search(rf'<h3 data-horizon="{horizon:g}">{horizon:g} minutes: served \S+, '
                         r"MAE [\d.,]+ = [\d.]+ x the strongest baseline", page), horizon


def test_missing_section_counts_reasons_and_lists_every_hexagon():
    data = ReportData(model={}, maps={1: [], 2: []}, missing={
        1: [{"hexagon": "882cf30137fffff", "reason": "no live data"},
            {"hexagon": "882cf30159fffff", "reason": "no live data"}],
        2: [{"hexagon": "882cf30a1dfffff", "reason": "too little <recent> data"}]})
    page = render(data)
    assert "0 of 3 replayed series are on the map; 3 got no forecast" in page
    assert "<td>1</td><td>2</td><td class=text>no live data</td>" in page
    assert ("882cf30a1dfffff", 2, "too little <recent> data") in _missing_rows(page)
    assert len(_missing_rows(page)) == 3
    live = LiveMap(forecasts={1: [{"hexagon": "a"}]}, missing=data.missing)
    assert live.summary(4) == ("map: 1 of 4 replayed series have a forecast, 3 have none "
                               "(2 no live data; 1 too little <recent> data); the report lists "
                               "them")


def test_a_forecast_anchored_before_the_newest_replayed_period_is_not_fresh():
    start = pd.Timestamp("2025-11-26T00:00:00Z")
    replayed = pd.DataFrame({Col.HEXAGON: [h3.str_to_int("882cf30137fffff")] * 2,
                             Col.SERVICE_TYPE: [1, 1],
                             Col.PERIOD_START: [start - pd.Timedelta(minutes=7.5), start]})
    newest = newest_periods(replayed)
    item = {"hexagon": "882cf30137fffff", "issued_for": (start - pd.Timedelta(minutes=7.5))
            .isoformat()}
    assert not is_fresh(LiveMap({1: [item]}, {}), newest)
    assert is_fresh(LiveMap({1: [{**item, "issued_for": start.isoformat()}]}, {}), newest)


def test_demo_end_to_end_prints_top_risers_and_writes_report(tmp_path: Path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert demo.main(TINY) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "cheaper than a real training run, to stay under a minute: 1 CNN epochs" in captured.err
    for horizon in ("7.5", "30", "60", "90"):
        assert f"top rising hexagons in {horizon} minutes:" in out
    # risers: now -> forecast (+increase, %, confidence, model)
    assert re.search(r"\n  [0-9a-f]{15} service [123]: \d+ -> \d+ \(\+\d+, \+[\d.]+%, "
                     r"confidence [\d.]+, ", out)
    assert "\nevaluated horizons: 7.5, 30, 60, 90 min\n" in out  # the demo city reaches 90 min
    assert f"report: {tmp_path / '.pulsar' / 'report.html'}" in out
    assert re.search(r"\nmap: \d+ of \d+ replayed series have a forecast", out)
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/.pulsar/mlflow.db" in out
    assert (tmp_path / ".pulsar" / "report.html").stat().st_size > 0
