"""A flood against a real predictor: do the real series keep answering, unchanged, in budget?

Usage: python bench/bench_flood.py [--hexagons 300] [--foreign 50000] [--new-services 20]

One run: trains a small Forecaster on a synthetic city, registers it in a throw-away sqlite
MLflow store, starts `pulsar serve` as a subprocess fed over a real nats-server, and fills its
live buffer with the city's recent rows. Baseline (same process, same session): its RSS, the
live buffer's estimated bytes and the median answer time of 50-hexagon live requests. Then the
flood, one row per series as in issue 21: `--foreign` distinct res-8 cells far outside the city
(Paris), and the city's cells under `--new-services` service types it was never trained on
(new series inside the city, beyond PULSAR_LIVE_MAX_NEW_SERIES). Prints the same numbers after
the flood, their ratios to the baseline, whether every real hexagon answers the same forecasts,
and the rejected rows by reason. Nothing is timed in a test; this prints, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_serving import city, rows, start  # noqa: E402
from tests.support.services import free_port, running_nats  # noqa: E402

MODEL = "pulsar-bench-all"
POD_LIMIT_MB = 1024  # the chart's default predictor memory limit


def train_and_register(uri: str, workdir: Path, hexagons: int) -> str:
    import mlflow

    from pulsar_core.bundle import example_rows, log_bundle
    from pulsar_core.data.synthetic import generate_snapshots
    from pulsar_core.registry import Registry
    from pulsar_core.settings import TrainSettings
    from pulsar_core.training import train_forecaster

    history = generate_snapshots(n_hexagons=hexagons, service_types=(1,), days=2,
                                 mode="continuous")
    forecaster, report = train_forecaster(history, TrainSettings(
        cnn_epochs=1, cnn_channels=8, holdout_days=0.5))
    mlflow.set_tracking_uri(uri)
    os.chdir(workdir)
    with mlflow.start_run() as run:
        logged = log_bundle(forecaster, report, example_rows(history))
    registry = Registry(uri)
    version = registry.create_version(MODEL, logged.model_uri, run.info.run_id, {}).version
    registry.set_alias(MODEL, version)
    return version


def flood_rows(frame: pd.DataFrame, foreign: int, new_services: int
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per series: `foreign` cells around Paris; the city's cells x new services."""
    import h3.api.basic_int as h3int

    newest = frame[frame["period_start"] == frame["period_start"].max()].iloc[0]
    template = rows(pd.DataFrame([newest]))[0]
    rings = 1
    while 3 * rings * (rings + 1) + 1 < foreign:
        rings += 1
    paris = sorted(h3int.grid_disk(h3int.latlng_to_cell(48.85, 2.35, 8), rings))[:foreign]
    outside = [template | {"hexagon": cell} for cell in paris]
    city_cells = [int(h) for h in frame["hexagon"].drop_duplicates()]
    inside = [template | {"hexagon": cell, "service_type": 100 + s}
              for s in range(new_services) for cell in city_cells]
    return outside, inside


async def publish(nats_url: str, payload: list[dict[str, Any]]) -> None:
    import nats

    from pulsar_core.events import signals_subject

    client = await nats.connect(nats_url)
    for begin in range(0, len(payload), 2000):
        await client.publish(signals_subject("bench", "all"),
                             json.dumps(payload[begin:begin + 2000]).encode())
    await client.flush()
    await client.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def metrics(base: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("pulsar_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def post(base: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    request = urllib.request.Request(f"{base}/v1/forecast", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - started, answer


def snapshot(base: str, pid: int, cells: list[int]) -> dict[str, Any]:
    """RSS, buffer bytes, median answer time of 50-hexagon requests, and every forecast."""
    times, forecasts = [], []
    for repeat in range(3):
        for begin in range(0, len(cells), 50):
            took, answer = post(base, {"hexagons": cells[begin:begin + 50]})
            assert answer["source"] == "live" and not answer["missing"], answer["missing"][:3]
            times.append(took)
            if repeat == 0:
                forecasts.extend(answer["forecasts"])
    values = metrics(base)
    key = lambda f: (f["hexagon_id"], f["service_type"], f["horizon_minutes"])  # noqa: E731
    return {"rss_mb": rss_mb(pid), "answer_ms": statistics.median(times) * 1000,
            "buffer_mb": values.get("pulsar_live_buffer_bytes", 0) / 2**20,
            "budget_mb": values.get("pulsar_live_buffer_budget_bytes", 0) / 2**20,
            "series": values.get("pulsar_live_series", 0),
            "forecasts": sorted(forecasts, key=key)}


def ingested(base: str) -> float:
    return sum(v for k, v in metrics(base).items()
               if k.startswith("pulsar_live_ingested_rows_total"))


def wait_for(predicate: Any, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hexagons", type=int, default=300)
    parser.add_argument("--foreign", type=int, default=50_000)
    parser.add_argument("--new-services", type=int, default=20)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pulsar-flood-"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    print(f"work dir {workdir}; training and registering a small model ...", flush=True)
    train_and_register(uri, workdir, args.hexagons)
    frame = city(args.hexagons)
    cells = [int(h) for h in frame["hexagon"].drop_duplicates()]
    outside, inside = flood_rows(frame, args.foreign, args.new_services)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with running_nats(workdir / "js") as nats_server:
        port = free_port()
        predictor = start(
            [sys.executable, "-m", "pulsar_cli.main", "serve", "--mlflow-tracking-uri", uri,
             "--registered-model", MODEL, "--port", str(port), "--host", "127.0.0.1",
             "--nats-url", nats_server.url, "--city", "bench", "--service-type", "all",
             "--log-level", "error"], port, env, workdir / "predictor.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: metrics(base).get("pulsar_nats_connected") == 1, "NATS")
            asyncio.run(publish(nats_server.url, rows(frame)))
            wait_for(lambda: metrics(base).get("pulsar_live_series") == len(cells), "live rows")
            time.sleep(3)  # the background live table
            before = snapshot(base, predictor.pid, cells)
            started = time.perf_counter()
            asyncio.run(publish(nats_server.url, outside))
            wait_for(lambda: ingested(base) >= len(frame) + len(outside), "the flood ingested")
            ingest_s = time.perf_counter() - started
            time.sleep(3)
            after = snapshot(base, predictor.pid, cells)
            asyncio.run(publish(nats_server.url, inside))
            wait_for(lambda: ingested(base) >= len(frame) + len(outside) + len(inside),
                     "the new series ingested")
            time.sleep(3)
            budgeted = snapshot(base, predictor.pid, cells)
            rejected = {k: v for k, v in metrics(base).items()
                        if k.startswith("pulsar_live_rejected_rows_total")}
        finally:
            predictor.terminate()
            predictor.wait(timeout=30)
    print(f"\n{args.hexagons} real hexagons; flood: {args.foreign:,} foreign cells, one row "
          f"each (ingested in {ingest_s:.1f}s); then {len(inside):,} new in-city series "
          "(the city's cells x service types never trained on), one row each")
    print(f"{'':<10} {'baseline':>12} {'foreign flood':>16} {'ratio':>6} {'+ new series':>15}")
    for name, unit in (("rss_mb", "MB"), ("buffer_mb", "MB"), ("answer_ms", "ms"),
                       ("series", "")):
        ratio = after[name] / before[name] if before[name] else float("nan")
        print(f"{name:<10} {before[name]:9.1f} {unit:<2} {after[name]:13.1f} {unit:<2} "
              f"{ratio:6.2f} {budgeted[name]:12.1f} {unit:<2}")
    print(f"buffer budget {after['budget_mb']:.0f} MB; predictor RSS {budgeted['rss_mb']:.0f} MB "
          f"of the {POD_LIMIT_MB} MB pod limit")
    print(f"real forecasts unchanged by the foreign flood: "
          f"{after['forecasts'] == before['forecasts']} ({len(before['forecasts'])} forecasts); "
          f"after the new in-city series: {budgeted['forecasts'] == before['forecasts']} "
          "(admitted series inside the city are data the features may read)")
    for name, value in sorted(rejected.items()):
        print(f"  {name} {value:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
