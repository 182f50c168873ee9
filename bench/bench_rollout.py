"""Live rollout costs: how soon a shadow is promoted once its evidence is complete, and what a
shadow predictor costs beside the champion.

Usage: python bench/bench_rollout.py [--trials 3] [--check-seconds 5] [--hexagons 300]

(a) Time to promotion: the real operator (kopf, against KMock) with a real nats-server and a
    real `mlflow server`; the registry poll is left at 300 s, so only the live rollout's own
    re-check (PULSAR_ROLLOUT_CHECK_SECONDS) can promote. Score events for a champion and a
    better challenger are published up to one period short of minScoredForecasts; the clock
    starts when the last needed event is acknowledged by JetStream and stops when MLflow's
    `champion` alias names the challenger. Printed as seconds and as a ratio of the re-check
    interval (expected: below 1 plus the reconcile's own work) and of the registry poll (the
    bound before the re-check existed).
(b) Shadow cost: real `pulsar serve` processes fed the same live periods over NATS. Window 1:
    the champion alone; window 2: the champion plus a shadow (PULSAR_ROLE=shadow) of another
    version. CPU seconds and RSS of the predictor processes (psutil), as ratios of window 2 to
    window 1, both measured in this run over the same number of periods.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from tests.support.services import free_port, running_nats, wait_for_port  # noqa: E402

HORIZONS = (30.0, 60.0)
T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)


# ---- (a) time from complete evidence to promotion ------------------------------------------

def _score_events(name: str, version: str, mae: float, periods: range, seed: int) -> list[Any]:
    import numpy as np

    from pulsar_core.live_scores import ForecastScores

    rng = np.random.default_rng(seed)
    return [ForecastScores(model_name=name, version=version, horizon_minutes=h,
                           period_start=T0 + timedelta(minutes=7.5 * p),
                           errors={f"{x}:1": float(abs(rng.normal(mae, 0.2))) for x in range(20)})
            for p in periods for h in HORIZONS]


async def _publish(url: str, subject: str, events: list[Any]) -> None:
    import nats

    from pulsar_core.live_scores import ensure_scores_stream

    client = await nats.connect(url)
    js = client.jetstream()
    await ensure_scores_stream(js)
    for event in events:
        await js.publish(subject, event.model_dump_json().encode(),
                         headers={"Nats-Msg-Id": event.msg_id()})
    await client.close()


async def _announce(url: str, name: str, version: str) -> None:
    """What the trainer publishes after registering: the operator looks at once."""
    from pulsar_core.events import MODEL_REGISTERED, ModelRegistered
    from pulsar_core.publisher import publish_event_async

    await publish_event_async(url, MODEL_REGISTERED,
                              ModelRegistered(model_name=name, version=version, run_id="bench"))


async def _eventually(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise TimeoutError("the operator did not get there in time")


async def time_to_promotion(trials: int, check_seconds: float, mlflow_uri: str,
                            nats_url: str) -> list[float]:
    import kmock

    from pulsar_core.live_scores import scores_subject
    from tests.operator.conftest import (
        GOOD,
        NS,
        SM,
        champion_version,
        declare_resources,
        register_version,
        running_operator,
        status_of,
        surge_model,
    )

    better = {h: type(s)(h, s.mae * 0.9, s.persistence_mae, s.baseline_mae, s.coverage)
              for h, s in GOOD.items()}  # passes the offline gate against GOOD
    rollout = {"strategy": "shadow", "minScoredForecasts": 160, "minDurationSeconds": 0}
    latencies = []
    async with kmock.KubernetesEmulator() as server, kmock.Server(server):
        declare_resources(server)
        for trial in range(trials):  # present before the operator starts, as after a restart
            register_version(mlflow_uri, f"pulsar-bench-rollout-{trial}", GOOD)
            server.objects[SM, NS, f"bench-{trial}"] = surge_model(
                f"bench-{trial}", city=f"c{trial}", registeredModel=f"pulsar-bench-rollout-{trial}",
                rollout=rollout, training={"horizonsMinutes": [30, 60]})
        async with running_operator(server, nats_url=nats_url, registry_poll_seconds=300.0,
                                    rollout_check_seconds=check_seconds,
                                    mlflow_tracking_uri=mlflow_uri):
            for trial in range(trials):
                name, city = f"bench-{trial}", f"c{trial}"
                registered = f"pulsar-bench-rollout-{trial}"
                await _eventually(lambda r=registered: champion_version(mlflow_uri, r) == "1")
                register_version(mlflow_uri, registered, better)
                await _announce(nats_url, registered, "2")
                await _eventually(lambda n=name: (status_of(server, n).get("rollout") or {})
                                  .get("phase") == "Shadowing")
                subject = scores_subject(city, "eco")
                last = 8  # 8 periods x 20 forecasts = 160: the 8th completes the evidence
                await _publish(nats_url, subject,
                               _score_events(registered, "1", 4.0, range(last - 1), trial)
                               + _score_events(registered, "2", 3.0, range(last - 1), trial + 9))
                await asyncio.sleep(check_seconds * (trial + 1) / (trials + 1))  # any phase
                tail = (_score_events(registered, "1", 4.0, range(last - 1, last), trial)
                        + _score_events(registered, "2", 3.0, range(last - 1, last), trial))
                await _publish(nats_url, subject, tail)
                started = time.monotonic()
                await _eventually(lambda r=registered: champion_version(mlflow_uri, r) == "2")
                latencies.append(time.monotonic() - started)
    return latencies


# ---- (b) a shadow predictor's CPU and memory beside the champion ---------------------------

def _train_two(uri: str, workdir: Path, hexagons: int) -> Any:
    import mlflow

    from pulsar_core.bundle import example_rows, log_bundle
    from pulsar_core.data.synthetic import generate_snapshots
    from pulsar_core.registry import Registry
    from pulsar_core.settings import TrainSettings
    from pulsar_core.training import train_forecaster

    start = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%d")
    city = generate_snapshots(n_hexagons=hexagons, service_types=(1,), days=2, start=start,
                              mode="continuous")
    mlflow.set_tracking_uri(uri)
    os.chdir(workdir)
    registry = Registry(uri)
    for seed in (1, 2):
        params = TrainSettings(cnn_epochs=2, cnn_channels=8, cnn_seeds=1, backtest_folds=1,
                               horizons_minutes=[30, 60], holdout_days=0.5, seed=seed)
        forecaster, report = train_forecaster(city, params)
        with mlflow.start_run() as run:
            logged = log_bundle(forecaster, report, example_rows(city))
        registry.create_version("pulsar-bench-shadow", logged.model_uri, run.info.run_id, {})
    return city


def _serve(uri: str, nats_url: str, version: str, role: str, workdir: Path) -> Any:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PULSAR_ROLE": role}
    log = (workdir / f"predictor-{version}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "pulsar_cli.main", "serve", "--mlflow-tracking-uri", uri,
         "--registered-model", "pulsar-bench-shadow", "--model-version", version,
         "--port", str(port), "--host", "127.0.0.1", "--nats-url", nats_url, "--city", "bench",
         "--service-type", "shadow", "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, 120)
    return process, port


def _usage(processes: list[Any]) -> tuple[float, float]:
    """CPU seconds so far and RSS (MiB) of these processes and their children."""
    cpu = rss = 0.0
    for process in processes:
        for each in [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]:
            times = each.cpu_times()
            cpu += times.user + times.system
            rss += each.memory_info().rss / 2**20
    return cpu, rss


async def _feed(nats_url: str, frame: Any, periods: list[Any], pause: float) -> None:
    import nats

    from pulsar_core.contract import Col
    from pulsar_core.events import signals_subject
    from tests.predictor.payloads import as_rows

    client = await nats.connect(nats_url)
    for start in periods:
        rows = as_rows(frame[frame[Col.PERIOD_START] == start])
        for begin in range(0, len(rows), 1500):
            await client.publish(signals_subject("bench", "shadow"),
                                 json.dumps(rows[begin:begin + 1500]).encode())
        await client.flush()
        await asyncio.sleep(pause)
    await client.close()


def shadow_cost(hexagons: int, window_periods: int, pause: float) -> dict[str, float]:
    from pulsar_core.contract import Col

    workdir = Path(tempfile.mkdtemp(prefix="pulsar-bench-rollout-"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    city = _train_two(uri, workdir, hexagons)
    starts = sorted(city[Col.PERIOD_START].unique())
    history, first, second = (starts[-160 - 2 * window_periods:-2 * window_periods],
                              starts[-2 * window_periods:-window_periods],
                              starts[-window_periods:])
    with running_nats(workdir / "js") as server:
        champion, _ = _serve(uri, server.url, "1", "champion", workdir)
        shadow = None
        try:
            asyncio.run(_feed(server.url, city, history[:-window_periods], 0.0))
            time.sleep(5)  # the first refresh and CNN warm-up are not part of the window
            cpu0, _ = _usage([champion])
            asyncio.run(_feed(server.url, city, first, pause))
            cpu1, rss_alone = _usage([champion])
            shadow, _ = _serve(uri, server.url, "2", "shadow", workdir)
            asyncio.run(_feed(server.url, city, history[-window_periods:], 0.0))
            time.sleep(5)
            cpu2, _ = _usage([champion, shadow])
            asyncio.run(_feed(server.url, city, second, pause))
            cpu3, rss_both = _usage([champion, shadow])
        finally:
            for process in (champion, shadow):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
    return {"cpu_alone_s": cpu1 - cpu0, "cpu_both_s": cpu3 - cpu2,
            "rss_alone_mib": rss_alone, "rss_both_mib": rss_both}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--check-seconds", type=float, default=5.0)
    parser.add_argument("--hexagons", type=int, default=300)
    parser.add_argument("--periods", type=int, default=24, help="live periods per window")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between periods")
    args = parser.parse_args()
    from tests.support.services import running_mlflow_server

    workdir = Path(tempfile.mkdtemp(prefix="pulsar-bench-rollout-ops-"))
    with running_nats(workdir / "js") as server, running_mlflow_server(workdir / "ml") as uri:
        latencies = asyncio.run(time_to_promotion(args.trials, args.check_seconds, uri,
                                                  server.url))
    worst = max(latencies)
    print("(a) evidence complete -> alias moved: "
          + ", ".join(f"{s:.2f}s" for s in latencies)
          + f"; worst / rollout check ({args.check_seconds:g}s) = "
          f"{worst / args.check_seconds:.2f}; worst / registry poll (300s) = {worst / 300:.4f}")
    cost = shadow_cost(args.hexagons, args.periods, args.pause)
    print(f"(b) {args.hexagons} hexagons, {args.periods} live periods per window: CPU "
          f"{cost['cpu_alone_s']:.1f}s alone vs {cost['cpu_both_s']:.1f}s with a shadow "
          f"(x{cost['cpu_both_s'] / cost['cpu_alone_s']:.2f}); RSS "
          f"{cost['rss_alone_mib']:.0f} MiB vs {cost['rss_both_mib']:.0f} MiB "
          f"(x{cost['rss_both_mib'] / cost['rss_alone_mib']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
