"""The demo's live path on a tiny city: real nats-server, real `pulsar serve`, report vs API."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

from pulsar_cli import demo
from pulsar_cli.demo_stack import DemoStack, get_json, port_open
from pulsar_cli.report import change_label

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


def _maps(page: str) -> dict[int, ET.Element]:
    blocks = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    trees = [ET.fromstring(block) for block in blocks]
    return {int(tree.get("data-service-type")): tree for tree in trees}


def test_report_matches_the_live_api(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = demo.parser().parse_args([*TINY, "--no-serve"])
    settings = demo.demo_settings(args, print)
    code, served = demo._train_and_promote(settings, args.workdir, print)
    assert code == 0 and served["registered_model"] == "pulsar-demo-all"

    with DemoStack(args.workdir) as stack:
        url = demo.start_services(stack, settings, served, print)
        services = demo.replay_recent(stack, settings, url, 12, print)
        data = demo.collect(url, settings, services)
        path = demo.write_report(data, args.workdir)
        answers = {s: get_json(f"{url}/v1/forecast/top?horizon=30&limit=1000&service_type={s}")
                   for s in services}
        ports = [int(u.rsplit(":", 1)[1]) for u in (url, stack.nats_url)]
    assert not any(port_open(p) for p in ports)  # every process stopped
    assert services == [1, 2, 3]

    page = path.read_text()
    parser = _Svgs(page)
    parser.feed(page)
    assert parser.external == []
    maps = _maps(page)
    assert sorted(maps) == services
    for service, (status, body) in answers.items():
        assert status == 200 and body["forecasts"]
        polygons = maps[service].findall(f"{SVG}polygon")
        expected = {f["hexagon"]: f for f in body["forecasts"]}
        assert len(polygons) == len(expected)
        for polygon in polygons:
            forecast = expected[polygon.get("data-hexagon")]
            title = polygon.find(f"{SVG}title").text
            assert f": {change_label(forecast['change_pct'])} in 30 min" in title
            assert len(polygon.get("points").split()) in (6, 7)  # H3 hexagon or pentagon
    assert "data:image/png;base64," in page  # the trainer's forecast-vs-actual plot
    assert "<th>horizon" in page or "<th>" in page.split("Evaluation (hold-out)")[1]


def test_demo_end_to_end_prints_top_risers_and_writes_report(tmp_path: Path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert demo.main(TINY) == 0
    out = capsys.readouterr().out
    for horizon in (30, 60, 90):
        assert f"top rising hexagons in {horizon} minutes:" in out
    assert re.search(r"\n  [0-9a-f]{15} service [123]: [+-]\d+\.\d\d% \(", out)
    assert f"report: {tmp_path / '.pulsar' / 'report.html'}" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/.pulsar/mlflow.db" in out
    assert (tmp_path / ".pulsar" / "report.html").stat().st_size > 0
