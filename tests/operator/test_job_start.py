"""A training Job whose pods cannot start fails at once with the reason, not at its deadline;
one whose trainer failed quotes the trainer's own termination message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pulsar_operator.status import Training
from pulsar_operator.training import (
    StartProblem,
    failure_message,
    refused_pods,
    start_check_due,
    still_waiting,
    trainer_failure,
    unscheduled_pod,
    unstartable_pod,
)

from tests.operator.conftest import (
    JOBS,
    NS,
    SM,
    api,
    condition,
    events_of,
    eventually,
    finish_job,
    objects,
    running_operator,
    status_of,
    surge_model,
)

QUOTA = ('Error creating: pods "tehran-eco-train-abc-x1" is forbidden: exceeded quota: '
         "team-quota, requested: pods=1, used: pods=0, limited: pods=0")


def _event(reason: str, message: str, at: str) -> dict[str, Any]:
    return {"reason": reason, "message": message, "lastTimestamp": at}


def _pod(reason: str | None, init: bool = False) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": f"{reason} detail"}} if reason else \
        {"running": {}}
    statuses = [{"name": "train", "image": "ghcr.io/x/trainer:bad", "state": state}]
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": "job-pod"}, "status": {key: statuses}}


def test_the_latest_failed_create_event_is_the_reason() -> None:
    events = [_event("FailedCreate", "old refusal", "2026-11-29T10:00:00Z"),
              _event("SuccessfulCreate", "created pod", "2026-11-29T10:00:30Z"),
              _event("FailedCreate", QUOTA, "2026-11-29T10:01:00Z")]
    assert refused_pods(events) == f"pods cannot be created: {QUOTA}"
    assert refused_pods([_event("SuccessfulCreate", "created", "2026-11-29T10:00:00Z")]) is None


def test_only_waiting_reasons_no_retry_cures_count() -> None:
    assert unstartable_pod([_pod(None), _pod("ContainerCreating")]) is None
    found = unstartable_pod([_pod(None), _pod("InvalidImageName")])
    assert found == "pod job-pod cannot start: InvalidImageName: InvalidImageName detail"
    assert unstartable_pod([_pod("CreateContainerConfigError", init=True)]) is not None


NO_NODE = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available"


def _unscheduled(name: str = "job-pod") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": NO_NODE}]}}


def test_a_pod_no_node_fits_is_a_wait_with_the_schedulers_word() -> None:
    scheduled = {"metadata": {"name": "ok"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "True"}]}}
    assert unscheduled_pod([scheduled]) is None
    found = unscheduled_pod([scheduled, _unscheduled()])
    assert found == f"pod job-pod waits for a node: {NO_NODE}"


def test_a_wait_is_shown_once_and_cleared_when_the_pods_run() -> None:
    running = Training(job="j", outcome="Running")
    wait = StartProblem(f"pod p waits for a node: {NO_NODE}", fatal=False)
    shown = still_waiting(running, wait, True, {"status": {"active": 1}})
    assert shown is not None and shown.part.last_training is not None
    waiting = shown.part.last_training
    assert waiting.outcome == "Running" and waiting.message == wait.message
    assert [(d.reason, d.warning) for d in shown.decisions] == [("TrainingPending", True)]
    assert still_waiting(waiting, wait, True, {"status": {"active": 1}}) is None  # once
    assert still_waiting(waiting, None, False, {"status": {"active": 1}}) is None  # not checked
    cleared = still_waiting(waiting, None, False, {"status": {"active": 1, "ready": 1}})
    assert cleared is not None and cleared.part.last_training is not None
    assert cleared.part.last_training.message is None and not cleared.decisions
    assert still_waiting(running, None, True, {"status": {"active": 1}}) is None


async def test_a_job_whose_pods_are_refused_fails_fast_and_is_deleted(k8s: Any,
                                                                       mlflow_uri: str) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri,
                                job_start_grace_seconds=0.5):
        training = await eventually(lambda: status_of(k8s, "tehran-eco").get("lastTraining"))
        job = objects(k8s, JOBS)[0]
        await api(k8s, "POST", f"/api/v1/namespaces/{NS}/events", {
            "metadata": {"name": "job-refused", "namespace": NS},
            "involvedObject": {"kind": "Job", "name": training["job"], "namespace": NS,
                               "uid": job["metadata"].get("uid", "")},
            "reason": "FailedCreate", "message": QUOTA, "type": "Warning"})
        failed = await eventually(
            lambda: status_of(k8s, "tehran-eco")["lastTraining"]["outcome"] == "Failed",
            what="the training marked Failed")
        assert failed
        last = status_of(k8s, "tehran-eco")["lastTraining"]
        assert "exceeded quota" in last["message"] and last["job"] == training["job"]
        await eventually(lambda: not objects(k8s, JOBS), what="the stuck Job deleted")
        # Events are posted after the status patch (reconciler._write): wait for it as well.
        warning = await eventually(lambda: next(
            (e for e in events_of(k8s, "tehran-eco") if e["reason"] == "TrainingFailed"), None),
            what="the TrainingFailed Event")
        assert warning["type"] == "Warning" and "exceeded quota" in warning["message"]
        training_condition = condition(k8s, "tehran-eco", "Training")
        assert training_condition["status"] == "False"
        assert training_condition["reason"] == "Failed"
        assert "exceeded quota" in training_condition["message"]


def test_a_job_left_pending_is_asked_about_less_and_less_often() -> None:
    started = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    grace, checks = timedelta(seconds=60), {}
    asked = [second for second in range(0, 7200, 5)
             if start_check_due(checks, "ns/job", started, started + timedelta(seconds=second),
                                grace)]
    assert asked[:4] == [60, 120, 240, 480]
    assert len(asked) <= 9, asked  # hourly at most after the doubling reaches an hour
    assert not start_check_due({}, "ns/job", started, started + timedelta(seconds=59), grace)


NO_FILE = "no such file or directory: s3://b/x/part.parquet; check the data URI"


def _trainer_pod(name: str, job: str, message: str, finished: str,
                 code: int = 2) -> dict[str, Any]:
    terminated = {"exitCode": code, "reason": "Error", "message": message,
                  "finishedAt": finished}
    return {"metadata": {"name": name, "namespace": NS,
                         "labels": {"batch.kubernetes.io/job-name": job}},
            "spec": {"containers": [{"name": "trainer", "image": "trainer"}]},
            "status": {"phase": "Failed", "containerStatuses": [
                {"name": "trainer", "image": "trainer", "state": {"terminated": terminated}}]}}


def test_the_latest_failed_trainer_is_quoted_on_one_bounded_line() -> None:
    older = _trainer_pod("a", "j", "unreachable", "2026-11-29T10:00:00Z", code=3)
    tail = "[    0.1s] loading\nTraceback-free\npulsar train: " + NO_FILE + "\n"
    latest = _trainer_pod("b", "j", tail, "2026-11-29T10:05:00Z")
    assert trainer_failure([older, latest]) == f"trainer exited 2: pulsar train: {NO_FILE}"
    long = trainer_failure([_trainer_pod("c", "j", "x" * 5000, "t")])
    assert long is not None and len(long) < 400 and "\n" not in long
    quiet = _trainer_pod("d", "j", "", "t")
    assert trainer_failure([quiet]) is None and trainer_failure([]) is None
    assert failure_message(None, "BackoffLimitExceeded") == "BackoffLimitExceeded"
    assert failure_message("trainer exited 2: x", "rule 0") == "trainer exited 2: x (rule 0)"


async def test_a_failed_trainer_is_quoted_in_status_and_the_event(k8s: Any,
                                                                   mlflow_uri: str) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        training = await eventually(lambda: status_of(k8s, "tehran-eco").get("lastTraining"))
        # (KMock ignores label selectors: the real tier, tests/e2e/test_job_start.py, proves
        # that only the Job's own pods are read)
        await api(k8s, "POST", f"/api/v1/namespaces/{NS}/pods",
                  _trainer_pod("train-pod", training["job"], NO_FILE, "2026-11-29T10:00:00Z"))
        await finish_job(k8s, training["job"], ok=False)
        await eventually(
            lambda: status_of(k8s, "tehran-eco")["lastTraining"]["outcome"] == "Failed",
            what="the training marked Failed")
        last = status_of(k8s, "tehran-eco")["lastTraining"]
        assert last["message"].startswith(f"trainer exited 2: {NO_FILE}"), last["message"]
        warning = await eventually(lambda: next(
            (e for e in events_of(k8s, "tehran-eco") if e["reason"] == "TrainingFailed"), None),
            what="the TrainingFailed Event")
        assert warning["type"] == "Warning" and NO_FILE in warning["message"]
        assert NO_FILE in condition(k8s, "tehran-eco", "Training")["message"]
        # no champion and the training failed: phase Failed, and Ready says why (not Pending)
        await eventually(lambda: status_of(k8s, "tehran-eco").get("phase") == "Failed")
        ready = condition(k8s, "tehran-eco", "Ready")
        assert ready["reason"] == "TrainingFailed" and NO_FILE in ready["message"]
