"""The operator at scale on a real control plane (envtest: etcd, kube-apiserver, controllers).

For each size (default 100 and 1,000 SurgeModels) and each start order (operator running when
the models arrive, operator started after they exist), on a fresh control plane:
seconds until every model has its Job and a status, operator peak RSS and CPU, API server and
etcd RSS, and after settling the operator's idle CPU and its API request rate (counted from the
API server's audit log, the operator's ServiceAccount only). Then the retrain path: models
(--retrain-requests, default 50) whose first Job completes (a process kubelet runs a stand-in
trainer that exits 0), one NATS retrain request each, seconds from publish to the new Job
being visible (p50/p99).
Ratios are printed against the 100-model run of the same session. With `--baseline REF` every
measurement runs twice in the same session, once with the operator of git revision REF (a
worktree, first on PYTHONPATH) and once with this tree's, and the ratios are against REF. The
reconciles per model come from the operator's own pulsar_operator_reconciles_total.

Usage: python bench/bench_operator_real.py [--sizes 100 1000] [--settle 30] [--baseline REF]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pulsar_operator.nats_bridge import ensure_retrain_stream  # noqa: E402
from pulsar_operator.rbac import RULES  # noqa: E402

from pulsar_core.events import retrain_subject  # noqa: E402
from tests.support.envtest import ControlPlane, running_plane  # noqa: E402
from tests.support.kubeapi import Api  # noqa: E402
from tests.support.kubelet import ProcessKubelet  # noqa: E402
from tests.support.services import NatsServer, free_port, running_mlflow_server  # noqa: E402

NS, ACCOUNT = "bench", "pulsar-operator"
USER = f"system:serviceaccount:{NS}:{ACCOUNT}"
AUDIT = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
         "rules": [{"level": "Metadata", "users": [USER]}, {"level": "None"}]}


def model(index: int, paused: bool = False) -> dict[str, Any]:
    return {"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
            "metadata": {"name": f"city{index}-eco", "namespace": NS},
            "spec": {"city": f"city{index}", "serviceType": "eco", "paused": paused,
                     "data": {"uris": ["s3://bucket/data/"]}}}


@contextmanager
def plane(workdir: Path) -> Iterator[tuple[ControlPlane, Api, Path]]:
    """A fresh control plane with the operator's ServiceAccount bound to the chart's rules."""
    with running_plane(workdir, NS, controllers=True, audit_policy=AUDIT) as (control, api):
        api.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": ACCOUNT, "namespace": NS}})
        api.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": ACCOUNT}, "rules": RULES})
        api.apply({"apiVersion": "rbac.authorization.k8s.io/v1",
                   "kind": "ClusterRoleBinding", "metadata": {"name": ACCOUNT},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                               "kind": "ClusterRole", "name": ACCOUNT},
                   "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT,
                                 "namespace": NS}]})
        account = workdir / "serviceaccount"
        account.mkdir()
        (account / "token").write_text(api.token_for(ACCOUNT, NS, 36000))
        (account / "ca.crt").write_bytes(control.pki.ca_crt.read_bytes())
        (account / "namespace").write_text(NS)
        yield control, api, account


REGISTRY_POLL_SECONDS = 300.0  # the operator's default


@dataclass(frozen=True)
class Engine:
    """Which operator code runs: this tree (code None) or a worktree of another revision."""

    name: str
    code: Path | None = None

    def pythonpath(self) -> str | None:
        if self.code is None:
            return None
        return os.pathsep.join(str(self.code / part) for part in
                               ("", "operator", "predictor_image", "trainer_image"))


@contextmanager
def baseline_worktree(ref: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="pulsar-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), ref],
                   check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)],
                       check=False, capture_output=True)


def reconciles(port: int) -> float:
    """pulsar_operator_reconciles_total summed over its labels, from the operator's /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("pulsar_operator_reconciles_total"))


def start_operator(control: ControlPlane, account: Path, mlflow: str, workdir: Path,
                   nats_url: str | None = None,
                   registry_poll: float = REGISTRY_POLL_SECONDS,
                   job_start_grace: float = 60.0, engine: Engine = Engine("this tree"),
                   metrics_port: int = 0) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PULSAR_")}
    if engine.pythonpath():
        env["PYTHONPATH"] = str(engine.pythonpath())
    env |= {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(control.port),
            "PULSAR_SERVICE_ACCOUNT_DIR": str(account), "PULSAR_MLFLOW_TRACKING_URI": mlflow,
            "PULSAR_METRICS_PORT": str(metrics_port), "PULSAR_LIVENESS_PORT": "0",
            "PULSAR_STANDALONE": "true",
            "PULSAR_LOG_FORMAT": "plain", "PULSAR_HOST": "127.0.0.1",
            "PULSAR_REGISTRY_POLL_SECONDS": str(registry_poll),
            "PULSAR_JOB_START_GRACE_SECONDS": str(job_start_grace)}
    if nats_url:
        env["PULSAR_NATS_URL"] = nats_url
    log = (workdir / "operator.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "pulsar_cli.main", "operator"], env=env,
                            cwd=engine.code or workdir, stdout=log, stderr=subprocess.STDOUT)


def progress(api: Api) -> tuple[int, int]:
    jobs = len(api.list("Job", NS))
    statuses = sum(1 for item in api.list("SurgeModel", NS)
                   if (item.get("status") or {}).get("lastTraining"))
    return jobs, statuses


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def audit_requests(log: Path, since: datetime, until: datetime) -> int:
    return sum(audit_breakdown(log, since, until).values())


def audit_breakdown(log: Path, since: datetime, until: datetime) -> Counter[str]:
    """The operator's requests in a window, counted by `verb resource[/subresource]`."""
    seen: dict[str, str] = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        received = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if since <= received <= until:
            ref = event.get("objectRef") or {}
            what = "/".join(filter(None, (ref.get("resource"), ref.get("subresource"))))
            seen[event["auditID"]] = f"{event.get('verb')} {what or event.get('requestURI')}"
    return Counter(seen.values())


def scale_run(count: int, order: str, mlflow: str, settle: float,
              registry_poll: float, job_start_grace: float,
              engine: Engine) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, plane(Path(tmp)) as (control, api, account):
        operator = None
        if order == "running":
            operator = start_operator(control, account, mlflow, Path(tmp),
                                      registry_poll=registry_poll,
                                      job_start_grace=job_start_grace, engine=engine,
                                      metrics_port=port)
            time.sleep(5)  # let it log in and start its watches before the models arrive
        started, began = time.monotonic(), datetime.now(UTC)
        for index in range(count):
            api.create(model(index))
        if operator is None:
            operator = start_operator(control, account, mlflow, Path(tmp),
                                      registry_poll=registry_poll,
                                      job_start_grace=job_start_grace, engine=engine,
                                      metrics_port=port)
            started, began = time.monotonic(), datetime.now(UTC)
        watched = psutil.Process(operator.pid)
        peak = 0.0
        jobs = statuses = 0
        while time.monotonic() - started < 600:
            peak = max(peak, rss_mb(operator.pid))
            jobs, statuses = progress(api)
            if jobs >= count and statuses >= count:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        passes = reconciles(port)  # by the time every model has its Job and status
        busy = audit_breakdown(control.audit_log, began, datetime.now(UTC))
        print(f"requests until every Job and status, by kind: {dict(busy.most_common(10))}",
              flush=True)
        time.sleep(settle)  # kopf's idle workers exit; Job/Pod churn calms down
        cpu_before, window_start = sum(watched.cpu_times()[:2]), datetime.now(UTC)
        time.sleep(settle)
        idle_cpu = (sum(watched.cpu_times()[:2]) - cpu_before) / settle
        window_end = datetime.now(UTC)
        idle = audit_breakdown(control.audit_log, window_start, window_end)
        requests = sum(idle.values())
        print(f"idle requests by kind: {dict(idle.most_common(6))}", flush=True)
        total = audit_requests(control.audit_log, datetime.min.replace(tzinfo=UTC), window_end)
        result = {"engine": engine.name, "count": count, "order": order, "seconds": elapsed,
                  "reconciles_per_model": passes / count, "jobs": jobs,
                  "statuses": statuses, "peak_rss_mb": max(peak, rss_mb(operator.pid)),
                  "operator_cpu_s": sum(watched.cpu_times()[:2]), "idle_cpu_pct": idle_cpu * 100,
                  "idle_requests_per_s": requests / settle, "operator_requests": total,
                  "apiserver_rss_mb": rss_mb(control.processes["kube-apiserver"].pid),
                  "etcd_rss_mb": rss_mb(control.processes["etcd"].pid)}
        operator.terminate()
        operator.wait(timeout=30)
    return result


async def _publish(url: str, subject: str, msg_id: str) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    await ensure_retrain_stream(js)
    await js.publish(subject, b'{"reason": "bench"}', headers={"Nats-Msg-Id": msg_id})
    await client.close()


def retrain_latency(mlflow: str, engine: Engine, count: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp, plane(Path(tmp)) as (control, api, account):
        nats_server = NatsServer(Path(tmp) / "jetstream")
        nats_server.start()
        with control.client() as http:
            kubelet = ProcessKubelet(Api(http), Path(tmp) / "pods", "127.0.0.1", control.port,
                                     control.pki.ca_crt, stand_ins={("pulsar", "train"): ["true"]})
            kubelet.start()
            operator = start_operator(control, account, mlflow, Path(tmp), nats_server.url,
                                      engine=engine)
            try:
                for index in range(count):
                    api.create(model(index))
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and sum(
                        1 for item in api.list("SurgeModel", NS)
                        if ((item.get("status") or {}).get("lastTraining") or {}).get("outcome")
                        == "Succeeded") < count:
                    time.sleep(0.5)
                latencies = []
                for index in range(count):
                    name = f"city{index}-eco"
                    started = time.monotonic()
                    asyncio.run(_publish(nats_server.url, retrain_subject(f"city{index}", "eco"),
                                         f"bench-{index}"))
                    while time.monotonic() - started < 30 and len(api.list(
                            "Job", NS, labelSelector=f"forecasting.pulsar.dev/model={name}")) < 2:
                        time.sleep(0.02)
                    latencies.append(time.monotonic() - started)
                print(f"{engine.name}: latencies in request order: "
                      f"{[round(value, 2) for value in latencies]}", flush=True)
            finally:
                operator.terminate()
                operator.wait(timeout=30)
                kubelet.stop()
                nats_server.stop()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--orders", nargs="+", default=["running", "after"],
                        choices=["running", "after"])
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds to settle, then seconds of the idle window; make it at "
                        "least --registry-poll so the window holds every model's registry check")
    parser.add_argument("--registry-poll", type=float, default=REGISTRY_POLL_SECONDS)
    parser.add_argument("--job-start-grace", type=float, default=60.0,
                        help="PULSAR_JOB_START_GRACE_SECONDS; no node runs the 1,000 Jobs' pods "
                        "here, so each is asked about at grace, 2x, 4x ... of its wait")
    parser.add_argument("--skip-retrain", action="store_true")
    parser.add_argument("--retrain-requests", type=int, default=50,
                        help="models whose retrain request -> Job latency is measured (one each)")
    parser.add_argument("--baseline", metavar="REF",
                        help="also run the operator of this git revision, first, as the baseline")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        engines = [Engine("this tree")]
        if args.baseline:
            engines.insert(0, Engine(args.baseline,
                                     stack.enter_context(baseline_worktree(args.baseline))))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        mlflow = stack.enter_context(running_mlflow_server(Path(tmp)))
        results, latencies = [], {}
        for size in args.sizes:
            for order in args.orders:
                for engine in engines:
                    results.append(scale_run(size, order, mlflow, args.settle,
                                             args.registry_poll, args.job_start_grace, engine))
                    print(f"measured: {results[-1]}", flush=True)
        if not args.skip_retrain:
            latencies = {engine.name: sorted(retrain_latency(mlflow, engine,
                                                             args.retrain_requests))
                         for engine in engines}
    report(results, latencies, args.registry_poll, args.settle)


def report(results: list[dict[str, Any]], latencies: dict[str, list[float]],
           registry_poll: float, settle: float) -> None:
    base = results[0]
    print(f"{'engine':>10} {'models':>6} {'operator':>9} {'all Jobs+status s':>17} {'x':>5} "
          f"{'passes/model':>12} {'op RSS MB':>9} {'op CPU s':>8} {'idle CPU %':>10} "
          f"{'idle req/s':>10} {'apiserver MB':>12} {'etcd MB':>7}")
    for r in results:
        print(f"{r['engine'][:10]:>10} {r['count']:>6} {r['order']:>9} {r['seconds']:>17.1f} "
              f"{r['seconds'] / base['seconds']:>5.2f} {r['reconciles_per_model']:>12.2f} "
              f"{r['peak_rss_mb']:>9.0f} {r['operator_cpu_s']:>8.1f} "
              f"{r['idle_cpu_pct']:>10.2f} {r['idle_requests_per_s']:>10.2f} "
              f"{r['apiserver_rss_mb']:>12.0f} {r['etcd_rss_mb']:>7.0f}")
    print(f"registry poll {registry_poll:g} s, idle window {settle:g} s; x = against the "
          "first row (the baseline when --baseline is given)")
    for name, values in latencies.items():
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        print(f"{name}: retrain request -> Job visible over {len(values)} requests: "
              f"p50 {statistics.median(values):.2f} s, p99 {p99:.2f} s, max {values[-1]:.2f} s")


if __name__ == "__main__":
    main()
