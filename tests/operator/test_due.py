"""When a model next needs a reconcile without a watch event (the ticker queues only those)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pulsar_operator.config import OperatorSettings
from pulsar_operator.reconciler import _spread
from pulsar_operator.reconciler import next_due as _next_due
from pulsar_operator.runtime import Catalog, Runtime, due_keys
from pulsar_operator.spec import parse_spec
from pulsar_operator.status import Status

NOW = datetime(2026, 11, 29, 10, 7, 30, tzinfo=UTC)
KEY = ("pulsar", "tehran-eco")


def next_due(runtime: Runtime, key: tuple[str, str], spec: Any, status: dict[str, Any],
             now: datetime) -> datetime:
    """The operator's next_due on a status as the API holds it."""
    return _next_due(runtime, key, spec, Status.parse(status), now)


def _runtime(poll: float = 3600.0) -> Runtime:
    config = OperatorSettings(mlflow_tracking_uri="sqlite://", registry_poll_seconds=poll,
                              full_resync_seconds=600)
    return Runtime(settings=config, kube=None, registry=None, platform=None)  # type: ignore[arg-type]


def _spec(**training: Any) -> Any:
    return parse_spec({"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/"]},
                       "training": training})


def test_the_next_cron_slot_when_it_comes_first() -> None:
    due = next_due(_runtime(), KEY, _spec(schedule="*/15 * * * *"),
                   {"registry": {"checkedAt": NOW.isoformat()}}, NOW)
    assert due == datetime(2026, 11, 29, 10, 15, tzinfo=UTC)


def test_the_registry_poll_spread_per_model() -> None:
    due = next_due(_runtime(poll=300), KEY, _spec(schedule="0 0 1 1 *"),
                   {"registry": {"checkedAt": NOW.isoformat()}}, NOW)
    assert due - NOW == timedelta(seconds=_spread(KEY, 300))
    spreads = {round(_spread(("pulsar", f"m{i}"), 300)) for i in range(50)}
    assert len(spreads) > 10 and min(spreads) >= 270 and max(spreads) <= 330


def test_a_retry_or_rollout_deadline_comes_before_the_safety_resync() -> None:
    retry = NOW + timedelta(seconds=8)
    status = {"registry": {"retryAt": retry.isoformat()}}
    assert next_due(_runtime(), KEY, _spec(schedule="0 0 1 1 *"), status, NOW) == retry
    rolling = {"registry": {"checkedAt": NOW.isoformat()},
               "predictor": {"rolloutStartedAt": NOW.isoformat()}}
    spec = parse_spec({"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/"]},
                       "training": {"schedule": "0 0 1 1 *"},
                       "serving": {"rolloutDeadlineSeconds": 120}})
    assert next_due(_runtime(), KEY, spec, rolling, NOW) - NOW == timedelta(seconds=120)


def test_a_paused_model_only_has_the_safety_resync() -> None:
    spec = parse_spec({"city": "tehran", "serviceType": "eco", "paused": True,
                       "data": {"uris": ["s3://b/"]}})
    due = next_due(_runtime(), KEY, spec, {}, NOW) - NOW
    assert timedelta(seconds=450) <= due <= timedelta(seconds=750)


def test_the_ticker_queues_new_and_due_models_only() -> None:
    runtime = _runtime()
    runtime.catalog = Catalog()
    for name in ("new", "due", "later"):
        runtime.catalog.put({"metadata": {"namespace": "pulsar", "name": name}})
    runtime.next_due[("pulsar", "due")] = NOW - timedelta(seconds=1)
    runtime.next_due[("pulsar", "later")] = NOW + timedelta(seconds=60)
    assert sorted(due_keys(runtime, NOW)) == [("pulsar", "due"), ("pulsar", "new")]


def test_child_churn_that_a_reconcile_does_not_read_queues_nothing() -> None:
    from pulsar_operator.main import _what_matters

    job = {"kind": "Job", "spec": {"backoffLimit": 2}, "status": {"active": 1}}
    churned = {**job, "status": {"active": 1, "ready": 0, "uncountedTerminatedPods": {}}}
    done = {**job, "status": {"succeeded": 1, "conditions": [{"type": "Complete",
                                                               "status": "True"}]}}
    assert _what_matters("Job", job) == _what_matters("Job", churned)
    assert _what_matters("Job", job) != _what_matters("Job", done)
    deployment = {"kind": "Deployment", "metadata": {"generation": 2, "resourceVersion": "7"},
                  "spec": {"replicas": 2}, "status": {"readyReplicas": 1}}
    touched = {**deployment, "metadata": {"generation": 2, "resourceVersion": "8"}}
    ready = {**deployment, "status": {"readyReplicas": 2}}
    assert _what_matters("Deployment", deployment) == _what_matters("Deployment", touched)
    assert _what_matters("Deployment", deployment) != _what_matters("Deployment", ready)


def test_a_live_rollout_is_judged_again_soon_spread_per_model() -> None:
    runtime = _runtime()
    quiet = {"registry": {"checkedAt": NOW.isoformat()}}
    spec = _spec(schedule="0 0 1 1 *")
    for phase in ("Shadowing", "Watching"):
        due = next_due(runtime, KEY, spec, {**quiet, "rollout": {"phase": phase}}, NOW)
        assert due - NOW == timedelta(seconds=_spread(KEY, 30))
    for phase in ("Retired", "Promoted", "RolledBack"):
        due = next_due(runtime, KEY, spec, {**quiet, "rollout": {"phase": phase}}, NOW)
        assert due - NOW > timedelta(seconds=60), phase
    spreads = {round(_spread(("pulsar", f"m{i}"), 30), 1) for i in range(50)}
    assert len(spreads) > 10 and min(spreads) >= 27 and max(spreads) <= 33
