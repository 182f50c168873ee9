"""Pulsar installed on the real control plane as a platform engineer installs it: the chart
rendered by Helm's own engine, applied server-side, the operator running as the chart's pod
(logged in with its ServiceAccount), a real nats-server and a real `mlflow server`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support.kubeapi import Api, load_documents
from tests.support.kubelet import ProcessKubelet

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pulsar"
RELEASE, RELEASE_NS = "pulsar", "pulsar-system"
T = TypeVar("T")


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template` through Helm's Go engine (helm-python-sdk), documents in chart order."""
    import helm_python

    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values, name=RELEASE, namespace=RELEASE_NS, is_install=True)
    documents: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if path.endswith(".yaml"):
            documents += [doc for doc in yaml.safe_load_all(rendered[path]) if doc]
    return documents


def chart_crds() -> list[dict[str, Any]]:
    return load_documents(sorted((CHART / "crds").glob("*.yaml")))


def wait_for(check: Callable[[], T], timeout: float, what: str,
             diagnose: Callable[[], str] = lambda: "") -> T:
    """Poll until `check()` is truthy (bounded; no fixed sleeps decide the outcome)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}\n"
                         f"{diagnose()}")


@dataclass
class Installed:
    api: Api
    kubelet: ProcessKubelet

    def operator_pod(self) -> dict[str, Any] | None:
        pods = self.api.list("Pod", RELEASE_NS,
                             labelSelector="app.kubernetes.io/name=pulsar")
        return next((pod for pod in pods if not pod["metadata"].get("deletionTimestamp")),
                    None)

    def operator_log(self) -> str:
        logs = sorted(self.kubelet.workdir.glob(f"{RELEASE_NS}-*/operator.log"))
        return "\n".join(path.read_text(errors="replace") for path in logs)

    def assert_no_traceback(self) -> None:
        """The operator reported everything as status and Events: no traceback, shown if any."""
        log = self.operator_log()
        at = log.find("Traceback")
        assert at < 0, f"a traceback in the operator's log:\n{log[max(0, at - 1500):at + 3500]}"

    def pod_log(self, namespace: str, name: str) -> str:
        found = sorted(self.kubelet.workdir.glob(f"{namespace}-{name}/*.log"))
        return "\n".join(path.read_text(errors="replace") for path in found)

    def diagnose(self) -> str:
        lines = [f"kubelet errors: {self.kubelet.errors[-5:]}"]
        for log in sorted(self.kubelet.workdir.glob("*/*.log")):
            kept = [line for line in log.read_text(errors="replace").splitlines()
                    if "GET /healthz" not in line and "succeeded." not in line]
            lines += [f"--- {log.parent.name}/{log.name}", *kept[-25:]]
        return "\n".join(lines)


def install(api: Api, kubelet: ProcessKubelet, values: dict[str, Any],
            namespace_setup: Callable[[Api, str], None]) -> Installed:
    for crd in chart_crds():
        api.apply(crd)
    namespace_setup(api, RELEASE_NS)
    for document in render_chart(values):
        api.apply(document, namespace=RELEASE_NS)
    installed = Installed(api, kubelet)

    def ready() -> bool:
        pod = installed.operator_pod() or {}
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in (pod.get("status") or {}).get("conditions") or [])

    wait_for(ready, 90, "the operator pod to be Ready", installed.diagnose)
    return installed


def ready_pod_ips(api: Api, namespace: str, component: str, version: str) -> list[str]:
    """IPs of the Ready, not terminating pods of a model component serving `version`."""
    pods = api.list("Pod", namespace, labelSelector=f"app.kubernetes.io/component={component}")
    return [pod["status"]["podIP"] for pod in pods
            if not pod["metadata"].get("deletionTimestamp")
            and pod["metadata"].get("annotations", {}).get(
                "forecasting.pulsar.dev/model-version") == version
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in pod["status"].get("conditions") or [])]
