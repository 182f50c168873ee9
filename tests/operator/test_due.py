"""When: what a reconcile pass must do, and when the model runs next without a watch event
(timing.py, the one place that decides it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pulsar_operator.config import OperatorSettings
from pulsar_operator.spec import parse_spec
from pulsar_operator.status import Status
from pulsar_operator.timing import due_work, requeue_after
from pulsar_operator.timing import next_due as _next_due
from pulsar_operator.timing import spread as _spread

NOW = datetime(2026, 11, 29, 10, 7, 30, tzinfo=UTC)
KEY = ("pulsar", "tehran-eco")


def next_due(settings: OperatorSettings, key: tuple[str, str], spec: Any,
             status: dict[str, Any], now: datetime) -> datetime:
    """The operator's next_due on a status as the API holds it."""
    return _next_due(settings, key, spec, Status.parse(status), now)


def _runtime(poll: float = 3600.0) -> OperatorSettings:
    return OperatorSettings(mlflow_tracking_uri="sqlite://", registry_poll_seconds=poll,
                            full_resync_seconds=600)


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


def test_a_refused_child_backs_off_and_the_answer_is_seconds() -> None:
    quiet = {"registry": {"checkedAt": NOW.isoformat()}}
    spec = _spec(schedule="0 0 1 1 *")
    calm = requeue_after(_runtime(), KEY, spec, Status.parse(quiet), NOW)
    assert 450 <= calm <= 750  # nothing pending: the safety resync
    refused = {**quiet, "rejectedChild": {"message": "x", "failures": 2, "at": NOW.isoformat()}}
    assert requeue_after(_runtime(), KEY, spec, Status.parse(refused), NOW) == 20.0


def test_what_a_pass_must_do_is_read_from_state_not_from_why_it_was_queued() -> None:
    settings = _runtime(poll=300)
    checked = Status.parse({"registry": {"checkedAt": NOW.isoformat()},
                            "champion": {"version": "3"}, "challenger": {"version": "4"}})

    def due(**overrides: Any) -> tuple[bool, bool]:
        options: dict[str, Any] = {"inputs_changed": False, "job_finished": False,
                                   "announced": None, "rollout_next": None, "now": NOW}
        found = due_work(settings, KEY, overrides.pop("status", checked),
                         **(options | overrides))
        return found.registry, found.rollout

    assert due() == (False, False)  # polled just now, nothing new
    assert due(now=NOW + timedelta(seconds=400)) == (True, False)  # the poll came
    assert due(job_finished=True)[0] and due(inputs_changed=True)[0]
    assert due(announced=5) == (True, False)  # MLflow announced a version status never saw
    assert due(announced=4) == (False, False)  # already judged
    never = Status.parse({})
    assert due(status=never)[0]  # never read
    rolling = Status.parse({"registry": {"checkedAt": NOW.isoformat()},
                            "rollout": {"phase": "Shadowing"}})
    assert due(status=rolling) == (False, True)  # first look at a rollout
    later = NOW + timedelta(seconds=30)
    assert due(status=rolling, rollout_next=later) == (False, False)
    assert due(status=rolling, rollout_next=later, now=later) == (False, True)


def test_child_churn_that_a_reconcile_does_not_read_queues_nothing() -> None:
    from pulsar_operator.handlers import _what_matters

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
