"""Serving throughput and latency: this predictor vs `mlflow models serve`, same registered model.

Usage: python bench/bench_serving.py [--hexagons 4000] [--concurrency 10] [--requests 200]

One run: trains a small Forecaster on synthetic data, registers it in a throw-away sqlite MLflow
store, starts both servers as subprocesses (and a nats-server feeding the predictor's live
buffer), then measures with an aiohttp client at fixed concurrency:
  * single hexagon and 1,000-hexagon batches, each server given the same history rows
    (apples to apples: both run the same Forecaster.predict); each request asks for other
    hexagons (a pool cycled in the same order for both servers), as real clients do;
  * the predictor's live path (no history in the request: the live buffer fed over NATS and its
    precomputed forecast table), which is how clients are meant to call it;
  * single-hexagon p99 at 50 concurrent clients, and one 4,000-hexagon batch.
Prints p50/p99 (ms), throughput (req/s) and the ratios against MLflow measured in this run.
Closed-loop clients (send again as soon as answered) measure capacity: their latency is
concurrency / throughput by Little's law, whatever the server does. The paced scenario (50 clients
at 10 req/s each) measures the latency a client sees below saturation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.services import free_port, running_nats, wait_for_port  # noqa: E402

MODEL = "pulsar-bench-all"
HISTORY_PERIODS = 16
SINGLE_POOL = 200


def train_and_register(uri: str, workdir: Path) -> tuple[str, pd.DataFrame]:
    """Train on a small synthetic city; return the version and a large city to serve."""
    import mlflow

    from pulsar_core.bundle import example_rows, log_bundle
    from pulsar_core.data.synthetic import generate_snapshots
    from pulsar_core.registry import Registry
    from pulsar_core.settings import TrainSettings
    from pulsar_core.training import train_forecaster

    small = generate_snapshots(n_hexagons=60, service_types=(1,), days=2, mode="continuous")
    params = TrainSettings(cnn_epochs=2, cnn_channels=16, holdout_days=0.5)
    forecaster, report = train_forecaster(small, params)
    mlflow.set_tracking_uri(uri)
    os.chdir(workdir)  # MLflow's default artifact root (./mlruns) lands in the work dir
    with mlflow.start_run() as run:
        logged = log_bundle(forecaster, report, example_rows(small))
    registry = Registry(uri)
    version = registry.create_version(MODEL, logged.model_uri, run.info.run_id, {}).version
    registry.set_alias(MODEL, version)
    return version, forecaster.spec


def city(hexagons: int) -> pd.DataFrame:
    """The last HISTORY_PERIODS periods of a `hexagons`-cell synthetic city, ending now."""
    from pulsar_core.contract import PERIOD, Col
    from pulsar_core.data.synthetic import generate_snapshots

    frame = generate_snapshots(n_hexagons=hexagons, service_types=(1,), days=1,
                               mode="continuous", seed=11)
    newest = frame[Col.PERIOD_START].max()
    frame = frame[frame[Col.PERIOD_START] > newest - HISTORY_PERIODS * PERIOD].copy()
    shift = pd.Timestamp.now(tz="UTC").floor(PERIOD) - newest
    frame[Col.PERIOD_START] += shift
    frame[Col.PERIOD_END] += shift
    return frame.reset_index(drop=True)


def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready snapshot rows (naive UTC timestamps: MLflow schemas take no time zone)."""
    out = frame.copy()
    for column in ("period_start", "period_end"):
        out[column] = out[column].dt.tz_localize(None).dt.strftime("%Y-%m-%dT%H:%M:%S")
    out["rule_sheet_id"] = out["rule_sheet_id"].astype("float64")
    records = out.to_dict("records")
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in records]


def with_neighbours(frame: pd.DataFrame, cells: list[int]) -> pd.DataFrame:
    import h3.api.basic_int as h3int

    context = {n for c in cells for n in h3int.grid_disk(c, 1)}
    return frame[frame["hexagon"].isin(context)]


def bodies(frame: pd.DataFrame, cells: list[int]) -> tuple[bytes, bytes, bytes, bytes]:
    """Request bodies for these hexagons: (predictor with history columns, predictor live,
    mlflow, predictor with history rows). Both servers get the same rows column-wise
    (MLflow's dataframe_split, the predictor's history_columns)."""
    history = rows(with_neighbours(frame, cells))
    columns = list(history[0])
    by_column = {c: [r[c] for r in history] for c in columns}
    predictor = json.dumps({"hexagons": cells, "history_columns": by_column}).encode()
    by_row = json.dumps({"hexagons": cells, "history": history}).encode()
    live = json.dumps({"hexagons": cells}).encode()
    mlflow_body = json.dumps({"dataframe_split": {
        "columns": columns, "data": [[r[c] for c in columns] for r in history]}}).encode()
    return predictor, live, mlflow_body, by_row


async def load(url: str, body: bytes | list[bytes], concurrency: int, requests: int
               ) -> dict[str, float]:
    """Send `requests` POSTs with `concurrency` in flight; latency percentiles and throughput.

    A list of bodies is sent in turn (different hexagons per request, as real clients ask).
    """
    import aiohttp

    latencies: list[float] = []
    failures = 0
    sequence = body if isinstance(body, list) else [body]
    queue = (sequence[i % len(sequence)] for i in range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker() -> None:
            nonlocal failures
            for payload in queue:
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    failures += response.status != 200
                latencies.append(time.perf_counter() - started)

        async with session.post(url, data=sequence[0], headers=headers) as warm:  # warm-up
            await warm.read()
            if warm.status != 200:
                raise RuntimeError(f"{url}: {warm.status} {(await warm.text())[:300]}")
        clock = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - clock
    ms = np.asarray(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "rps": len(latencies) / elapsed, "failures": failures, "n": len(latencies)}


async def paced(url: str, body: bytes, clients: int, rate: float, seconds: float
                ) -> dict[str, float]:
    """Open loop: `clients` each send `rate` req/s on a fixed schedule for `seconds`.

    Latency counts from the scheduled send time, so queueing delay is not hidden
    (no coordinated omission).
    """
    import aiohttp

    latencies: list[float] = []
    failures = 0
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        begin = loop.time() + 0.1

        async def client(offset: float) -> None:
            nonlocal failures
            sends = int(seconds * rate)
            for k in range(sends):
                due = begin + offset + k / rate
                await asyncio.sleep(max(0.0, due - loop.time()))
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    failures += response.status != 200
                latencies.append(loop.time() - due)

        await asyncio.gather(*(client(i / (clients * rate)) for i in range(clients)))
    ms = np.asarray(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "rps": clients * rate, "failures": failures, "n": len(latencies)}


def start(command: list[str], port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=180)
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"{command[:4]} did not start; see {log}") from None
    return process


def wait_ready(base: str, live_series: int) -> None:
    import urllib.request

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
                body = json.loads(response.read())
                if body["ready"] and body["live_series"] >= live_series:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{base} never became ready with {live_series} live series")


async def feed_live(nats_url: str, frame: pd.DataFrame) -> None:
    import nats

    from pulsar_core.events import signals_subject

    client = await nats.connect(nats_url)
    payload = rows(frame)
    for begin in range(0, len(payload), 2000):
        await client.publish(signals_subject("bench", "all"),
                             json.dumps(payload[begin:begin + 2000]).encode())
    await client.flush()
    await client.close()


def line(name: str, result: dict[str, float]) -> str:
    return (f"{name:<46} p50 {result['p50_ms']:8.1f} ms  p99 {result['p99_ms']:8.1f} ms  "
            f"{result['rps']:8.1f} req/s  (n={result['n']}, failed={result['failures']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hexagons", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch-requests", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pulsar-bench-"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    print(f"work dir {workdir}; training and registering a small model ...", flush=True)
    version, _ = train_and_register(uri, workdir)
    frame = city(args.hexagons)
    cells = [int(h) for h in frame["hexagon"].drop_duplicates()]
    # mlflow models serve execs `uvicorn` by name: the venv's bin must be on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT), "PATH": path}
    results: dict[str, dict[str, float]] = {}
    with running_nats(workdir / "js") as nats_server:
        p_port, m_port = free_port(), free_port()
        predictor = start(
            [sys.executable, "-m", "pulsar_cli.main", "serve", "--mlflow-tracking-uri", uri,
             "--registered-model", MODEL, "--port", str(p_port), "--host", "127.0.0.1",
             "--nats-url", nats_server.url, "--city", "bench", "--service-type", "all",
             "--max-hexagons", "5000", "--request-timeout-seconds", "60",
             "--log-level", "warning"], p_port, env, workdir / "predictor.log")
        mlflow_server = start(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}/{version}",
             "-h", "127.0.0.1", "-p", str(m_port), "--env-manager", "local"], m_port,
            # the predictor gives torch cores // predict threads intra-op threads (1 here); the
            # same for MLflow, so neither pays for oversubscribed OpenMP threads
            {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))},
            workdir / "mlflow.log")
        try:
            base = f"http://127.0.0.1:{p_port}"
            asyncio.run(feed_live(nats_server.url, frame))
            wait_ready(base, len(cells))
            results = asyncio.run(measure(args, base, f"http://127.0.0.1:{m_port}", frame,
                                          cells))
        finally:
            for process in (predictor, mlflow_server):
                process.terminate()
                process.wait(timeout=30)
    report(results, args)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps(results, indent=2))
    return 0


async def measure(args: argparse.Namespace, predictor: str, mlflow_url: str,
                  frame: pd.DataFrame, cells: list[int]) -> dict[str, dict[str, float]]:
    forecast, invocations = f"{predictor}/v1/forecast", f"{mlflow_url}/invocations"
    # the live forecast table is computed in the background once the buffer is full
    await asyncio.sleep(2)
    # every request asks for other hexagons (a pool cycled in the same order for both servers)
    # drivers ask from all over the city: a seeded random pool (the frame lists cells in
    # spatial order, where consecutive requests would be neighbours)
    pool = np.random.default_rng(5).choice(len(cells), size=min(SINGLE_POOL, len(cells)),
                                           replace=False)
    singles = [bodies(frame, [cells[i]]) for i in pool.tolist()]
    batches = [bodies(frame, cells[i:i + 1000]) for i in range(0, min(len(cells), 4000), 1000)]
    single = singles[0]
    c, n, nb = args.concurrency, args.requests, args.batch_requests
    results = {
        "single/mlflow": await load(invocations, [b[2] for b in singles], c, n),
        "single/predictor-history": await load(forecast, [b[0] for b in singles], c, n),
        "single/predictor-live": await load(forecast, [b[1] for b in singles], c, n),
        "batch1000/mlflow": await load(invocations, [b[2] for b in batches], c, nb),
        "batch1000/predictor-history": await load(forecast, [b[0] for b in batches], c, nb),
        "batch1000/predictor-live": await load(forecast, [b[1] for b in batches], c, nb),
        "batch1000/predictor-history-rows": await load(forecast, [b[3] for b in batches], c,
                                                       nb),
        "single@50/predictor-live": await load(forecast, [b[1] for b in singles], 50,
                                               max(n, 500)),
        "single@50/predictor-history": await load(forecast, [b[0] for b in singles], 50, n),
        "single@50/mlflow": await load(invocations, [b[2] for b in singles], 50, n),
        # 50 clients that each ask 10 times a second (500 req/s offered), not as fast as possible
        "single@50x10rps/predictor-live": await paced(forecast, single[1], 50, 10.0, 6.0),
    }
    everything = bodies(frame, cells[:4000])
    results["batch4000/predictor-live"] = await load(forecast, everything[1], 1, 5)
    results["batch4000/predictor-history"] = await load(forecast, everything[0], 1, 3)
    return results


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(f"\nconcurrency {args.concurrency} unless marked @50; {os.cpu_count()} cores")
    for name, result in results.items():
        print(line(name, result))
    print("\nratios vs mlflow models serve (throughput ×, p99 ×; >1 = predictor better)")
    for scenario in ("single", "batch1000", "single@50"):
        base = results.get(f"{scenario}/mlflow")
        for path in ("predictor-history", "predictor-history-rows", "predictor-live"):
            mine = results.get(f"{scenario}/{path}")
            if base and mine:
                print(f"  {scenario:<10} {path:<22} throughput {mine['rps'] / base['rps']:6.2f}×"
                      f"   p99 {base['p99_ms'] / mine['p99_ms']:6.2f}×")


if __name__ == "__main__":
    sys.exit(main())
