"""The production loop on a real control plane, with no demo code: ClickHouse is the only source.

Raw kandoo records are inserted into a real ClickHouse server period by period, in wall-clock
time. One SurgeModel reads them twice, as in a cluster: its training Job queries the table
(credentials from a Secret, by reference) and its signal bridge Deployment polls it into
`pulsar.signals.<city>.<service>`. The promoted champion's predictor pods then serve live
forecasts for exactly the inserted hexagons, and when the next period lands in ClickHouse the
predictor scores its forecast of it and publishes the score event the drift and rollout
machinery judge on.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import h3
import httpx
import nats
import pandas as pd
import pytest

from pulsar_core.contract import PERIOD, RawCol
from pulsar_core.data.synthetic import generate_kandoo_csv
from pulsar_core.events import SIGNALS_STREAM, signals_subject
from tests.e2e.conftest import MLFLOW_PASSWORD, NATS_PASSWORD, restricted_namespace
from tests.e2e.live_replay import LiveReplay
from tests.e2e.readback import secrets_found
from tests.e2e.stack import Installed, ready_pod_ips, wait_for
from tests.support.clickhouse import (
    READER,
    READER_PASSWORD,
    SKIP_REASON,
    ClickHouseServer,
    clickhouse_binary,
    read_export,
    running_clickhouse,
)

pytestmark = pytest.mark.skipif(clickhouse_binary() is None, reason=SKIP_REASON)
NS, NAME = "pulsar-prod", "karaj-eco"
CITY, SERVICE = "karaj", "eco"  # a scope of its own: one bridge per signals subject
REGISTERED = "pulsar-e2e-karaj-eco"
HEXAGONS = 30
CLOSE_AFTER = pd.Timedelta(seconds=60)  # BridgeSettings.close_after_seconds (the default)


class Table:
    """The ClickHouse table, filled period by period from a synthetic continuous city."""

    def __init__(self, server: ClickHouseServer, records: pd.DataFrame) -> None:
        self.server = server
        self.records = records
        self.periods = records[RawCol.CLICKHOUSE_TIME].dt.floor(PERIOD)
        self.inserted_until: pd.Timestamp | None = None

    def insert_until(self, last: pd.Timestamp) -> int:
        """Insert every record of the periods after the last insert, up to `last`."""
        keep = self.periods <= last
        if self.inserted_until is not None:
            keep &= self.periods > self.inserted_until
        self.server.insert_frame(self.records[keep])
        self.inserted_until = last
        return int(keep.sum())


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Table]:
    today = pd.Timestamp.now(tz="UTC").normalize()
    export = tmp_path_factory.mktemp("city") / "kandoo.csv"
    generate_kandoo_csv(export, n_hexagons=HEXAGONS, service_types=(1,), days=5, seed=21,
                        mode="continuous", start=str((today - pd.Timedelta(days=3)).date()))
    with running_clickhouse(tmp_path_factory.mktemp("clickhouse")) as server:
        server.create_kandoo_table()
        yield Table(server, read_export(export))


def surge_model() -> dict[str, Any]:
    return {"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {"city": CITY, "serviceType": SERVICE, "cityId": 1, "serviceTypeId": 1,
                     "registeredModel": REGISTERED,
                     "data": {"clickhouse": {"url": "CLICKHOUSE_URL",
                                             "credentialsSecret": {"name": "clickhouse-reader"}},
                              "lookbackDays": 7},
                     "signals": {"source": "bridge"},
                     "training": {"image": "pulsar-trainer:e2e", "horizonsMinutes": [7.5, 30],
                                  "backtestFolds": 1,
                                  "cnn": {"epochs": 2, "channels": 8, "seeds": 1}},
                     "promotion": {"policy": "auto", "minImprovementOverPersistencePct": 0,
                                   "maxRegressionVsChampionPct": 50},
                     "rollout": {"strategy": "direct"},
                     "serving": {"image": "pulsar-predictor:e2e", "replicas": 1}}}


def _secret() -> dict[str, Any]:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "clickhouse-reader", "namespace": NS},
            "data": {"username": b64(READER), "password": b64(READER_PASSWORD)}}


def _newest_closed(now: pd.Timestamp) -> pd.Timestamp:
    """The start of the newest period the bridge treats as closed at `now`."""
    return (now - CLOSE_AFTER).floor(PERIOD) - PERIOD


def _live_forecast(ip: str, hexagons: list[int]) -> dict[str, Any]:
    answer = httpx.post(f"http://{ip}:8080/v1/forecast", json={"hexagons": hexagons},
                        timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _anchors(ip: str, hexagons: list[int]) -> set[pd.Timestamp]:
    """The periods the live forecasts of `hexagons` start from (their newest live period)."""
    return {pd.Timestamp(f["issued_for"]) for f in _live_forecast(ip, hexagons)["forecasts"]}


def _readyz(ip: str, port: int = 8080) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"http://{ip}:{port}/readyz", timeout=5).json())
    except (httpx.HTTPError, ValueError):
        return {}


def _scored(replay: LiveReplay, version: str, target: pd.Timestamp) -> bool:
    asyncio.run(replay.read())
    return (version, 7.5, target.to_pydatetime()) in replay.seen


def test_clickhouse_to_live_forecasts_and_scores(installed: Installed,
                                                  services: tuple[str, str],
                                                  table: Table) -> None:
    api, diagnose = installed.api, installed.diagnose
    nats_url, mlflow_url = services
    restricted_namespace(api, NS)
    api.apply(_secret())
    # history up to the newest closed period: what the trainer and the bridge's backfill read
    history_end = _newest_closed(pd.Timestamp.now(tz="UTC"))
    assert table.insert_until(history_end) > 0
    model = surge_model()
    model["spec"]["data"]["clickhouse"]["url"] = table.server.url
    api.apply(model)

    # the training Job reads ClickHouse (credentials by reference) and the champion is served
    wait_for(lambda: (api.get("SurgeModel", NAME, NS) or {}).get("status", {}).get(
        "champion", {}).get("version") == "1", 300, "champion 1 trained from ClickHouse",
        diagnose)
    ips = wait_for(lambda: ready_pod_ips(api, NS, "predictor", "1"), 120,
                   "a Ready predictor pod (v1)", diagnose)
    bridge_ips = wait_for(lambda: [
        pod["status"]["podIP"] for pod in api.list(
            "Pod", NS, labelSelector="app.kubernetes.io/component=signal-bridge")
        if any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod["status"].get("conditions") or [])], 120,
        "a Ready signal bridge pod", diagnose)

    # the bridge's backfill (oldest slice first) reaches the predictor up to the newest period
    inserted = sorted(int(h) for h in table.records[RawCol.HEX_ID].unique())
    wait_for(lambda: _anchors(ips[0], inserted[:5]) == {history_end}, 300,
             f"live forecasts anchored on {history_end} (the backfill's newest period)",
             diagnose)
    # exactly the inserted hexagons are live: none more, and a cell never inserted is missing
    assert _readyz(ips[0])["live_series"] == HEXAGONS
    foreign = h3.str_to_int(h3.latlng_to_cell(35.84, 50.99, 8))  # Karaj, never inserted
    assert foreign not in inserted
    answer = _live_forecast(ips[0], [*inserted[:5], foreign])
    assert answer["source"] == "live" and answer["model"]["version"] == "1"
    assert {f["hexagon_id"] for f in answer["forecasts"]} == set(inserted[:5])
    assert [m["hexagon"] for m in answer["missing"]] == [h3.int_to_str(foreign)]

    # period by period: the next periods land in ClickHouse as time passes; once the newest
    # one closes, the bridge publishes it and the predictor scores the forecast it made of it
    now = pd.Timestamp.now(tz="UTC")
    target = (now - CLOSE_AFTER).floor(PERIOD)  # the oldest period still open for the bridge
    assert table.insert_until(target) > 0
    replay = LiveReplay(nats_url, CITY, SERVICE)
    wait_seconds = (target + PERIOD + CLOSE_AFTER - now).total_seconds() + 120
    wait_for(lambda: _scored(replay, "1", target), wait_seconds,
             f"the champion's score event for {target} (bridge -> predictor -> scores)",
             diagnose)
    # the score is made on ingest, the live table on the next refresh: all five follow shortly
    wait_for(lambda: _anchors(ips[0], inserted[:5]) == {target}, 60,
             f"live forecasts anchored on {target}", diagnose)

    # each inserted (hexagon, period) is on the subject exactly once: no duplicate, none lost
    inserted_rows = table.records[table.periods <= target].assign(
        period=table.periods).drop_duplicates([RawCol.HEX_ID, "period"])
    on_subject = asyncio.run(_messages_on(nats_url, signals_subject(CITY, SERVICE)))
    assert on_subject == len(inserted_rows)
    metrics = httpx.get(f"http://{bridge_ips[0]}:8080/metrics", timeout=5).text
    assert _metric(metrics, "pulsar_bridge_periods_published_total") >= HEXAGONS
    assert "pulsar_bridge_rejected_rows_total{" not in metrics
    # MLflow, NATS and ClickHouse all required credentials, and no object, log or MLflow
    # record holds one: they reached the pods by reference only
    leaks = secrets_found(installed, [NS], [MLFLOW_PASSWORD, NATS_PASSWORD, READER_PASSWORD],
                          mlflow_url, REGISTERED)
    assert leaks == {}, leaks
    api.delete("SurgeModel", NAME, NS)
    wait_for(lambda: not api.list("Deployment", NS) or None, 120,
             "the predictor and bridge Deployments garbage-collected", diagnose)


async def _messages_on(nats_url: str, subject: str) -> int:
    client = await nats.connect(nats_url)
    try:
        info = await client.jetstream().stream_info(SIGNALS_STREAM, subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))
    finally:
        await client.close()


def _metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith(name) and not line.startswith("#")]
    assert values, f"{name} not exported"
    return sum(values)

