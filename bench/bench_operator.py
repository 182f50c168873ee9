"""N SurgeModels created at once against KMock: seconds until all have a Job and a status.

Runs the real operator (`pulsar operator`) as a subprocess pointed at an in-process KMock, and
samples the operator's RSS. Prints 100 vs 1,000 (the ratio shows how it scales).
Usage: python bench/bench_operator.py [--sizes 100 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kmock
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.operator.conftest import JOBS, NS, SM, declare_resources, surge_model  # noqa: E402
from tests.support.services import running_mlflow_server  # noqa: E402


def _done(server: kmock.KubernetesEmulator, count: int) -> tuple[int, int]:
    jobs = statuses = 0
    for (resource, _, _), obj in list(server.objects.items()):
        if obj.deleted:
            continue
        if resource == JOBS:
            jobs += 1
        elif resource == SM and (obj.raw.get("status") or {}).get("lastTraining"):
            statuses += 1
    return jobs, statuses


async def run(count: int, timeout: float, mlflow_uri: str) -> dict[str, float]:
    async with kmock.KubernetesEmulator() as server, kmock.Server(server):
        declare_resources(server)
        for index in range(count):
            name = f"city{index}-eco"
            server.objects[SM, NS, name] = surge_model(name, city=f"city{index}")
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PULSAR_KUBE_API_URL": str(server.url).rstrip("/"),
                   "PULSAR_MLFLOW_TRACKING_URI": mlflow_uri,
                   "PULSAR_METRICS_PORT": "0", "PULSAR_LIVENESS_PORT": "0",
                   "PULSAR_STANDALONE": "true", "PULSAR_LOG_FORMAT": "plain"}
            debug = bool(os.environ.get("BENCH_DEBUG"))  # operator logs on the terminal
            process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from pulsar_operator.cli import main; "
                 "sys.exit(main(sys.argv[1:]))", *(["--verbose"] if debug else [])],
                env=env, cwd=tmp, stdout=None if debug else subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL)
            started = time.monotonic()
            peak = 0
            try:
                watched = psutil.Process(process.pid)
                while time.monotonic() - started < timeout:
                    peak = max(peak, watched.memory_info().rss)
                    jobs, statuses = _done(server, count)
                    if jobs >= count and statuses >= count:
                        break
                    await asyncio.sleep(0.25)
                elapsed = time.monotonic() - started
                cpu = sum(watched.cpu_times()[:2])
                own = sum(psutil.Process().cpu_times()[:2])
            finally:
                process.terminate()
                process.wait(timeout=30)
            jobs, statuses = _done(server, count)
    return {"count": count, "seconds": elapsed, "jobs": jobs, "statuses": statuses,
            "peak_rss_mb": peak / 2**20, "operator_cpu": cpu, "kmock_cpu": own}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    # the operator talks to an MLflow server over HTTP, as in a cluster (mlflow-skinny client)
    with tempfile.TemporaryDirectory() as tmp, running_mlflow_server(Path(tmp)) as uri:
        results = []
        for size in args.sizes:
            results.append(asyncio.run(run(size, args.timeout, uri)))
            print(f"measured {size}: {results[-1]}", flush=True)
    base = results[0]
    print(f"{'models':>7} {'seconds':>8} {'jobs':>6} {'status':>7} {'peak RSS MB':>12} "
          f"{'time x':>7} {'RSS x':>6} {'op CPU s':>9} {'KMock CPU s':>12}")
    for result in results:
        print(f"{result['count']:>7} {result['seconds']:>8.1f} {result['jobs']:>6} "
              f"{result['statuses']:>7} {result['peak_rss_mb']:>12.0f} "
              f"{result['seconds'] / base['seconds']:>7.2f} "
              f"{result['peak_rss_mb'] / base['peak_rss_mb']:>6.2f} "
              f"{result['operator_cpu']:>9.1f} {result['kmock_cpu']:>12.1f}")


if __name__ == "__main__":
    main()
