"""The operator's own model metrics: SurgeModels by phase and by last training outcome, and the
training duration histogram, observed once per finished Job (not per reconcile, not again by a
restarted operator); a deleted model leaves the gauges."""

from __future__ import annotations

from typing import Any

import pytest
from pulsar_operator import metrics

from tests.operator.conftest import (
    JOBS,
    NS,
    SM,
    api,
    eventually,
    finish_job,
    objects,
    patch_model,
    running_operator,
    status_of,
    surge_model,
)


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _trainings(outcome: str) -> float:
    return _value("pulsar_operator_training_duration_seconds_count", outcome=outcome)


def _status(phase: str, job: str | None = None, outcome: str | None = None,
            started: str = "2025-01-01T10:00:00+00:00",
            completed: str = "2025-01-01T10:12:00+00:00") -> dict[str, Any]:
    training = {"job": job, "outcome": outcome, "startedAt": started} if job else None
    if training is not None and outcome != "Running":
        training["completedAt"] = completed
    return {"phase": phase, **({"lastTraining": training} if training else {})}


def test_every_phase_of_a_namespace_is_reported_and_a_deleted_model_leaves() -> None:
    key = ("unit-phases", "a")
    metrics.observe_status(key, None, _status("Pending"))
    assert {phase: _value("pulsar_operator_models", namespace="unit-phases", phase=phase)
            for phase in metrics.PHASES} == {**dict.fromkeys(metrics.PHASES, 0.0), "Pending": 1}
    metrics.observe_status(("unit-phases", "b"), None, _status("Training", "b-train-1", "Running"))
    metrics.observe_status(key, _status("Pending"), _status("Serving"))
    metrics.observe_status(key, _status("Serving"), _status("Serving"))  # no change, no count
    assert _value("pulsar_operator_models", namespace="unit-phases", phase="Serving") == 1
    assert _value("pulsar_operator_models", namespace="unit-phases", phase="Pending") == 0
    assert _value("pulsar_operator_last_training", namespace="unit-phases",
                  outcome="Running") == 1
    metrics.forget(key)
    metrics.forget(key)  # twice: nothing more
    assert _value("pulsar_operator_models", namespace="unit-phases", phase="Serving") == 0
    assert _value("pulsar_operator_models", namespace="unit-phases", phase="Training") == 1
    metrics.forget(("unit-phases", "b"))
    names = {sample.labels.get("namespace") for family in metrics.REGISTRY.collect()
             for sample in family.samples}
    assert "unit-phases" not in names


def test_a_training_is_timed_once_when_its_end_is_written() -> None:
    key = ("unit-timing", "eco")
    running = _status("Training", "eco-train-1", "Running")
    failed = _status("Pending", "eco-train-1", "Failed")
    before = _trainings("failed"), _value("pulsar_operator_training_duration_seconds_sum",
                                          outcome="failed")
    metrics.observe_status(key, None, running)
    metrics.observe_status(key, running, failed)
    metrics.observe_status(key, failed, failed)  # the next reconciles
    metrics.observe_status(key, running, failed)  # the same end written again (a retried patch)
    assert _trainings("failed") == before[0] + 1
    assert _value("pulsar_operator_training_duration_seconds_sum",
                  outcome="failed") == before[1] + 720
    assert _value("pulsar_operator_last_training", namespace="unit-timing", outcome="Failed") == 1
    succeeded = _trainings("succeeded")
    metrics.observe_status(key, failed, _status("Training", "eco-train-2", "Running"))
    metrics.observe_status(key, _status("Training", "eco-train-2", "Running"),
                           _status("Serving", "eco-train-2", "Succeeded"))
    assert _trainings("succeeded") == succeeded + 1
    assert _value("pulsar_operator_last_training", namespace="unit-timing", outcome="Failed") == 0
    metrics.forget(key)


def test_a_restarted_operator_does_not_time_a_job_that_had_ended() -> None:
    """A new process reads the ended Job from the API's status: before == after."""
    ended = _status("Serving", "eco-train-9", "Succeeded")
    count = _trainings("succeeded")
    metrics.observe_status(("unit-restart", "eco"), ended, ended)
    assert _trainings("succeeded") == count
    assert _value("pulsar_operator_last_training", namespace="unit-restart",
                  outcome="Succeeded") == 1
    metrics.forget(("unit-restart", "eco"))


async def test_the_operator_counts_phases_and_times_a_failed_training_once(
        k8s: Any, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    k8s.objects[SM, NS, "metrics-eco"] = surge_model("metrics-eco")
    failed = _trainings("failed")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: objects(k8s, JOBS), what="a training Job")
        training = await eventually(lambda: status_of(k8s, "metrics-eco").get("lastTraining"))
        await eventually(lambda: _value("pulsar_operator_models", namespace=NS,
                                        phase="Training") >= 1, what="a model in Training")
        await finish_job(k8s, training["job"], ok=False)
        await eventually(lambda: status_of(k8s, "metrics-eco")["lastTraining"]["outcome"]
                         == "Failed", what="the failure in status")
        await eventually(lambda: _trainings("failed") == failed + 1, what="one failed training")
        assert _value("pulsar_operator_last_training", namespace=NS, outcome="Failed") >= 1
        await patch_model(k8s, "metrics-eco", {"metadata": {"generation": 2},
                                               "spec": {"serving": {"replicas": 2}}})
        await eventually(lambda: status_of(k8s, "metrics-eco").get("observedGeneration") == 2)
    monkeypatch.setattr(metrics, "_timed", {})  # a new process remembers no timed Job
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri) as memo:
        await eventually(lambda: memo["runtime"].statuses.get((NS, "metrics-eco")))
        counted = metrics._models.get((NS, "metrics-eco"))
        assert counted is not None and counted[1] == "Failed"
        assert _trainings("failed") == failed + 1
        await api(k8s, "DELETE", f"/apis/forecasting.pulsar.dev/v1alpha1/namespaces/{NS}/"
                  "surgemodels/metrics-eco")
        await eventually(lambda: (NS, "metrics-eco") not in metrics._models,
                         what="the deleted model leaving the gauges")
