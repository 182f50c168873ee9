"""D2: deleting several models of one scope together, on a real API server. The operator used
to log KeyError tracebacks for them and to create a ServiceAccount and a Job for a model just
after it was deleted (its worker read the object before it held the key)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.e2e.conftest import restricted_namespace
from tests.e2e.stack import Installed, wait_for

NS = "race"
NAMES = [f"r{i}" for i in range(6)]


def _model(name: str) -> dict[str, Any]:
    # one scope: r0 owns the MLflow name and subjects, the younger ones are refused
    return {"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"city": "race", "serviceType": "eco", "data": {"uris": ["s3://b/x/"]},
                     "training": {"image": "pulsar-trainer:e2e"}}}


def _created_after(items: list[dict[str, Any]], moment: datetime) -> list[str]:
    return [item["metadata"]["name"] for item in items
            if datetime.fromisoformat(item["metadata"]["creationTimestamp"]) > moment]


def test_deleting_a_scope_together_creates_nothing_and_logs_no_traceback_and_writes_as_pulsar(
        installed: Installed) -> None:
    api = installed.api
    restricted_namespace(api, NS)
    for name in NAMES:
        api.apply(_model(name))
    wait_for(lambda: all((api.get("SurgeModel", name, NS) or {}).get("status", {}).get("phase")
                         for name in NAMES) or None, 60, "every model reconciled once",
             installed.diagnose)
    # what the operator writes carries its own field manager, not the HTTP library's
    owner = api.get("SurgeModel", "r0", NS) or {}
    managers = {entry["manager"] for entry in owner["metadata"].get("managedFields") or []
                if entry.get("subresource") == "status"}
    assert managers == {"pulsar-operator"}, managers
    before = len(installed.operator_log())
    deleted_at = datetime.now(UTC).replace(microsecond=0)
    for name in NAMES:
        api.delete("SurgeModel", name, NS)
    wait_for(lambda: not api.list("SurgeModel", NS) or None, 30, "the models gone",
             installed.diagnose)
    # a few reconcile passes of every worker later
    wait_for(lambda: not api.list("Job", NS) or None, 60, "the Jobs garbage-collected",
             installed.diagnose)
    log = installed.operator_log()[before:]
    assert "Traceback" not in log and "KeyError" not in log, log[-3000:]
    late = _created_after(api.list("ServiceAccount", NS), deleted_at) + \
        _created_after(api.list("Job", NS), deleted_at)
    assert late == [], f"created for deleted models: {late}"
