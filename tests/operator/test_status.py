"""The typed status: the CRD names its fields, it round-trips, and the pure steps decide."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pulsar_operator.champion import champion_moved
from pulsar_operator.reconciler import finish, registry_down, rejection
from pulsar_operator.status import Registry, RejectedChild, Status, Training
from pulsar_operator.training import job_ended

from pulsar_core.registry import RegistryUnavailable, VersionInfo
from tests.operator.crd_schema import CRD_PATH

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_crd_status_schema_names_the_model_fields() -> None:
    import yaml

    crd = yaml.safe_load(CRD_PATH.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    model = {field.alias or name for name, field in Status.model_fields.items()}
    assert set(schema["properties"]) == model
    assert schema["x-kubernetes-preserve-unknown-fields"] is True  # extra="allow" needs it


def test_a_status_with_nulls_extras_and_nested_lists_round_trips() -> None:
    raw: dict[str, Any] = {
        "phase": "Serving", "observedGeneration": 3, "futureField": {"kept": [1, None]},
        "conditions": [{"type": "Ready", "status": "True", "reason": "PredictorAvailable",
                        "message": "ok", "observedGeneration": 3,
                        "lastTransitionTime": "2026-01-02T03:04:05Z"}],
        "champion": {"version": "4", "runId": "r", "metrics": {"mae30m": 1.5},
                     "mae30m": 1.5, "promotedAt": "2026-01-02T03:04:05Z"},
        "predictor": {"version": "4", "rolledOutAt": None, "readyReplicas": 2,
                      "available": True},
        "rollout": {"phase": "Watching", "horizons": [{"horizonMinutes": 30, "pValue": 0.01}]},
        "registry": {"checkedAt": "2026-01-02T03:04:05Z"},
        "rejectedChild": {"message": "predictor: 422", "failures": 2, "at": "x"},
    }
    assert Status.parse(raw).dump() == raw


def test_updated_sets_and_without_removes_a_field() -> None:
    status = Status.parse({"phase": "Pending", "rejectedChild": {"message": "m", "failures": 1,
                                                                 "at": "x"}})
    assert status.updated(phase=None).dump()["phase"] is None  # null: the merge patch removes
    assert "rejectedChild" not in status.without("rejected_child").dump()


def test_a_repeated_refusal_counts_and_is_announced_once() -> None:
    first = rejection(None, ["predictor: 422 bad"], NOW)
    assert first.part == RejectedChild(message="predictor: 422 bad", failures=1,
                                       at="2026-01-02T03:04:05Z")
    assert [d.reason for d in first.decisions] == ["ChildRejected"]
    again = rejection(first.part, ["predictor: 422 bad"], NOW)
    assert again.part is not None and again.part.failures == 2 and again.decisions == ()
    assert rejection(again.part, [], NOW).part is None


def test_a_finished_job_is_its_own_part_and_event() -> None:
    running = Training(job="m-train-1", outcome="Running", started_at="2026-01-02T03:00:00Z")
    step = job_ended(running, "Failed", "2 pods failed", NOW)
    assert step.part.dump() == {"lastTraining": {
        "job": "m-train-1", "outcome": "Failed", "message": "2 pods failed",
        "startedAt": "2026-01-02T03:00:00Z", "completedAt": "2026-01-02T03:04:05Z"}}
    assert [(d.reason, d.warning) for d in step.decisions] == [("TrainingFailed", True)]


def test_finish_sums_up_the_parts_without_changing_them() -> None:
    parts = Status.parse({"champion": {"version": "4"},
                          "predictor": {"available": True, "endpoint": "http://x"}})
    done = finish(parts, False, 2, None).dump()
    assert done["phase"] == "Serving" and done["observedGeneration"] == 2
    assert {c["type"]: c["reason"] for c in done["conditions"]} == {
        "Ready": "PredictorAvailable", "Training": "NeverTrained", "Promoted": "Champion",
        "Degraded": "AsExpected"}
    assert {k: v for k, v in done.items() if k not in ("phase", "observedGeneration",
                                                        "conditions")} == parts.dump()


def test_mlflow_down_counts_failures_keeps_checked_at_and_warns_once() -> None:
    error = RegistryUnavailable("http://mlflow", "503")
    first = registry_down(Registry(checked_at="2026-01-02T03:00:00Z"), error, 4.0, NOW)
    assert first.part.dump() == {"registry": {
        "checkedAt": "2026-01-02T03:00:00Z", "error": str(error), "failures": 1,
        "retryAt": "2026-01-02T03:04:09+00:00"}}
    assert [(d.reason, d.warning) for d in first.decisions] == [("MLflowUnavailable", True)]
    again = registry_down(first.part.registry, error, 8.0, NOW)
    assert again.part.registry is not None and again.part.registry.failures == 2
    assert again.decisions == ()


def test_moving_the_champion_keeps_the_previous_one_as_last_good() -> None:
    target = VersionInfo("m", "5", "run-5", "s3://x", {})
    assert champion_moved(target, "4", NOW).dump() == {
        "champion": {"version": "5", "runId": "run-5", "metrics": {},
                     "promotedAt": "2026-01-02T03:04:05Z"},
        "lastGoodVersion": "4"}
    assert "lastGoodVersion" not in champion_moved(target, "5", NOW).dump()
    assert "lastGoodVersion" not in champion_moved(target, None, NOW).dump()


def _shadow_model() -> Any:
    from pulsar_operator.domain import Platform, SurgeModel
    from pulsar_operator.spec import parse_spec

    spec = parse_spec({"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/"]}})
    return SurgeModel(name="tehran-eco", namespace="pulsar", uid="u", spec=spec,
                      platform=Platform("http://mlflow"))


def _passing(version: str) -> Any:
    from pulsar_core.promotion import PromotionPlan

    return PromotionPlan(target=VersionInfo("m", version, "run", "s3://x"),
                         reason=f"version {version} passed", event_reason="Promoted")


def test_a_gate_pass_shadows_the_champion_but_never_cuts_short_its_watch() -> None:
    from pulsar_operator.champion_machine import promotion_step
    from pulsar_operator.status import Rollout

    champion = VersionInfo("m", "3", "run", "s3://x")
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    step, target = promotion_step(_shadow_model(), Status(), _passing("4"), champion, now)
    assert target is None and step.part.rollout is not None
    assert (step.part.rollout.phase, step.part.rollout.challenger) == ("Shadowing", "4")
    assert [d.reason for d in step.decisions] == ["ShadowStarted"]
    watched = Status(rollout=Rollout(phase="Watching", champion="3", challenger="3"))
    step, target = promotion_step(_shadow_model(), watched, _passing("4"), champion, now)
    assert target is None and step.part.rollout is None and not step.decisions
    assert step.part.promotion is not None
    assert "waits until the watch of champion 3 ends" in str(step.part.promotion.reason)


def test_a_hand_edited_field_of_the_wrong_shape_is_rebuilt_not_fatal() -> None:
    raw = {"phase": "Serving", "observedGeneration": "three", "lastTraining": ["not", "a", "map"],
           "lastGoodVersion": "2"}
    status = Status.parse(raw)
    assert status.dump() == {"phase": "Serving", "lastGoodVersion": "2"}
