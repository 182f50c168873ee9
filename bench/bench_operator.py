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
import urllib.request
from pathlib import Path
from typing import Any

import kmock
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.operator.conftest import JOBS, NS, SM, declare_resources, surge_model  # noqa: E402
from tests.support.services import free_port, running_mlflow_server  # noqa: E402


class LeanEmulator(kmock.KubernetesEmulator):
    """KMock's emulator minus two costs that grow with the run, not with the operator.

    KMock keeps every request for assertions and, to match reactions, scans that whole log on
    every request (quadratic over a long run); and it finds an object by scanning all objects.
    The bench asserts nothing on the log, so it keeps only requests in flight, and looks an
    object up by its key first (falling back to KMock's scan). Storage, watch streams, request
    parsing and the served payloads stay KMock's own.
    """

    async def _handle(self, request: Any) -> Any:
        try:
            return await super()._handle(request)
        finally:
            for index, seen in enumerate(self._requests):
                if seen is request:
                    del self._requests[index]
                    break

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:
        if strict and request.name is not None:
            found = self.objects._objects.get((request.resource, request.namespace, request.name))
            if found is not None:
                return [found]
        return [obj for (resource, namespace, name), obj in self.objects.items()
                if resource == request.resource and (request.name is None or name == request.name)
                and (namespace == request.namespace if strict
                     else request.namespace is None or namespace == request.namespace)]


SETTLE_SECONDS = 20.0


def _gauge(port: int, name: str) -> float:
    """One gauge from the operator's /metrics (NaN when it cannot be read)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


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


async def run(count: int, timeout: float, mlflow_uri: str, lean: bool = True
              ) -> dict[str, float]:
    emulator = LeanEmulator if lean else kmock.KubernetesEmulator
    async with emulator() as server, kmock.Server(server):
        declare_resources(server)
        for index in range(count):
            name = f"city{index}-eco"
            server.objects[SM, NS, name] = surge_model(name, city=f"city{index}")
        metrics_port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PULSAR_KUBE_API_URL": str(server.url).rstrip("/"),
                   "PULSAR_MLFLOW_TRACKING_URI": mlflow_uri,
                   "PULSAR_METRICS_PORT": str(metrics_port), "PULSAR_LIVENESS_PORT": "0",
                   "PULSAR_STANDALONE": "true", "PULSAR_LOG_FORMAT": "plain"}
            debug = bool(os.environ.get("BENCH_DEBUG"))  # operator logs on the terminal
            process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from pulsar_operator.cli import main; "
                 "sys.exit(main(sys.argv[1:]))", *(["--verbose"] if debug else [])],
                env=env, cwd=tmp, stdout=None if debug else subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL)
            started = time.monotonic()
            peak = 0
            first_job = float("nan")
            try:
                watched = psutil.Process(process.pid)
                while time.monotonic() - started < timeout:
                    peak = max(peak, watched.memory_info().rss)
                    jobs, statuses = _done(server, count)
                    if jobs and first_job != first_job:
                        first_job = time.monotonic() - started
                    if jobs >= count and statuses >= count:
                        break
                    await asyncio.sleep(0.25)
                elapsed = time.monotonic() - started
                # kopf's per-object event workers exit 5 s after their object's last event
                # (measured: 890 tasks 5 s after the 1,000th status, 50 from 15 s on); what
                # stays is what the operator keeps, whatever the number of models
                await asyncio.sleep(SETTLE_SECONDS)
                tasks = _gauge(metrics_port, "pulsar_operator_asyncio_tasks")
                cpu = sum(watched.cpu_times()[:2])
                own = sum(psutil.Process().cpu_times()[:2])
            finally:
                process.terminate()
                process.wait(timeout=30)
            jobs, statuses = _done(server, count)
    return {"count": count, "seconds": elapsed, "first_job": first_job, "jobs": jobs,
            "tasks": tasks,
            "statuses": statuses, "peak_rss_mb": peak / 2**20, "operator_cpu": cpu,
            "kmock_cpu": own}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--plain-kmock", action="store_true",
                        help="unmodified KMock (its request log makes long runs quadratic)")
    args = parser.parse_args()
    # the operator talks to an MLflow server over HTTP, as in a cluster (mlflow-skinny client)
    with tempfile.TemporaryDirectory() as tmp, running_mlflow_server(Path(tmp)) as uri:
        results = []
        for size in args.sizes:
            results.append(asyncio.run(run(size, args.timeout, uri, lean=not args.plain_kmock)))
            print(f"measured {size}: {results[-1]}", flush=True)
    base = results[0]
    print(f"{'models':>7} {'seconds':>8} {'1st Job s':>9} {'jobs':>6} {'status':>7} "
          f"{'peak RSS MB':>12} {'tasks':>6} {'time x':>7} {'RSS x':>6} {'op CPU s':>9} "
          f"{'KMock CPU s':>12}")
    for result in results:
        print(f"{result['count']:>7} {result['seconds']:>8.1f} {result['first_job']:>9.1f} "
              f"{result['jobs']:>6} "
              f"{result['statuses']:>7} {result['peak_rss_mb']:>12.0f} {result['tasks']:>6.0f} "
              f"{result['seconds'] / base['seconds']:>7.2f} "
              f"{result['peak_rss_mb'] / base['peak_rss_mb']:>6.2f} "
              f"{result['operator_cpu']:>9.1f} {result['kmock_cpu']:>12.1f}")


if __name__ == "__main__":
    main()
