"""docs/argocd-health.lua judged by a real Lua 5.1 (what Argo CD's gopher-lua speaks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lupa.lua51 import LuaRuntime

SCRIPT = (Path(__file__).resolve().parents[1] / "docs" / "argocd-health.lua").read_text()


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the check the way Argo CD does: `obj` is a global built from the object's JSON."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, json.loads(json.dumps(obj)))
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


def _to_lua(lua: LuaRuntime, value: Any) -> Any:
    """Nested tables, lists as 1-based sequences (so `ipairs` walks conditions)."""
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def cond(kind: str, status: str, reason: str, message: str = "", generation: int = 3) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation}


def model(*conditions: dict, generation: int = 3, observed: int | None = 3,
          phase: str = "Serving", paused: bool = False) -> dict:
    status: dict[str, Any] = {"phase": phase, "conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
            "metadata": {"name": "tehran-eco", "generation": generation},
            "spec": {"city": "tehran", "paused": paused}, "status": status}


SERVING = cond("Ready", "True", "PredictorAvailable", "version 4 served at http://x")
NOT_DEGRADED = cond("Degraded", "False", "AsExpected")


@pytest.mark.parametrize(
    ("obj", "expected", "says"),
    [
        (model(SERVING, NOT_DEGRADED), "Healthy", "PredictorAvailable: version 4"),
        (model(SERVING, cond("Training", "True", "Schedule")), "Healthy", "version 4"),
        (model(SERVING, paused=True), "Suspended", "spec.paused"),
        (model(SERVING, observed=2), "Progressing", "generation 3"),
        (model(SERVING, observed=None), "Progressing", "(observed nil)"),
        (model(cond("Ready", "True", "PredictorAvailable", generation=2)), "Progressing",
         "judged for generation 2"),
        ({"metadata": {"generation": 1}, "spec": {}}, "Progressing", "waiting for the operator"),
        (model(NOT_DEGRADED), "Progressing", "waiting for the Ready condition"),
        (model(cond("Ready", "False", "NoChampion"), cond("Training", "True", "Create", "job a")),
         "Progressing", "training: Create: job a"),
        (model(cond("Ready", "False", "PredictorNotReady", "predictor not serving yet")),
         "Progressing", "PredictorNotReady"),
        (model(SERVING, cond("Degraded", "True", "MLflowUnavailable", "connection refused")),
         "Degraded", "MLflowUnavailable: connection refused"),
        (model(cond("Ready", "False", "InvalidSpec", "spec.city: required"), phase="Failed"),
         "Degraded", "InvalidSpec: spec.city: required"),
        (model(cond("Ready", "False", "NoChampion"), cond("Training", "False", "Failed", "OOM")),
         "Degraded", "last training failed: Failed: OOM"),
    ],
)
def test_health(obj: dict, expected: str, says: str) -> None:
    status, message = health(obj)
    assert (status, says in message) == (expected, True), message


def test_runs_on_lua_5_1_like_argo_cd() -> None:
    assert LuaRuntime().eval("_VERSION") == "Lua 5.1"


# ---- every status the operator can set, built by the operator's own finish ----------------
def _operator_status(generation: int = 3, **parts: Any) -> dict:
    """A SurgeModel whose status is what `reconciler.finish` writes for these status parts."""
    from pulsar_operator.reconciler import finish
    from pulsar_operator.status import Status

    errors = {key: parts.pop(key, None) for key in ("mlflow", "nats", "child")}
    status = finish(Status.parse(parts), False, generation, errors["mlflow"], errors["nats"],
                    errors["child"]).dump()
    return {"metadata": {"name": "m", "generation": generation}, "spec": {}, "status": status}


CHAMPION = {"version": "4"}
AVAILABLE = {"available": True, "readyReplicas": 2, "replicas": 2, "endpoint": "http://x"}
ROLLING = {"available": False, "readyReplicas": 1, "replicas": 2, "endpoint": "http://x"}
DOWN = {"available": False, "readyReplicas": 0, "replicas": 2, "endpoint": "http://x"}
RUNNING = {"outcome": "Running", "triggerKind": "schedule", "job": "m-train-1"}
FAILED_JOB = {"outcome": "Failed", "message": "2 pods failed", "job": "m-train-1"}
FAILED_GATE = {"version": "5", "passed": False, "reason": "MAE@30m 12 vs persistence 11"}
WAITING = {"version": "5", "passed": False, "awaitingApproval": True,
           "reason": "passed the gate; waiting for approval"}

OPERATOR_STATES = [
    ("new", {}, "Progressing", "NoChampion"),
    ("first training", {"lastTraining": RUNNING}, "Progressing", "training"),
    ("first training failed", {"lastTraining": FAILED_JOB}, "Degraded", "2 pods failed"),
    ("first version failed the gate", {"challenger": FAILED_GATE}, "Degraded", "MAE@30m 12"),
    ("first version awaits approval", {"challenger": WAITING}, "Suspended", "approval"),
    ("first rollout", {"champion": CHAMPION, "predictor": DOWN}, "Progressing",
     "PredictorNotReady"),
    ("first rollout never ready", {"champion": CHAMPION, "predictor": {
        **DOWN, "rolloutFailed": "not available within 600s"}}, "Degraded", "600s"),
    ("serving", {"champion": CHAMPION, "predictor": AVAILABLE}, "Healthy", "version 4"),
    ("rolling out while the old pods serve", {"champion": CHAMPION, "predictor": ROLLING},
     "Healthy", "RollingOut"),
    ("scheduled retrain while serving", {"champion": CHAMPION, "predictor": AVAILABLE,
                                         "lastTraining": RUNNING}, "Healthy", "version 4"),
    ("newer version failed the gate, champion serves", {
        "champion": CHAMPION, "predictor": AVAILABLE, "challenger": FAILED_GATE}, "Healthy",
     "version 4"),
    ("newer version awaits approval", {"champion": CHAMPION, "predictor": AVAILABLE,
                                       "challenger": WAITING}, "Suspended", "approval"),
    ("pinned version missing", {"champion": CHAMPION, "predictor": AVAILABLE, "promotion": {
        "eventReason": "PinnedVersionMissing", "reason": "pinned version 9 is not registered"}},
     "Degraded", "pinned version 9"),
    ("MLflow down", {"champion": CHAMPION, "predictor": AVAILABLE, "mlflow": "refused"},
     "Degraded", "MLflowUnavailable"),
    ("NATS down", {"champion": CHAMPION, "predictor": AVAILABLE, "nats": "NATS down"},
     "Degraded", "NatsUnavailable"),
    ("child refused", {"lastTraining": None, "child": "trainer Job: 422 cpu limit"},
     "Degraded", "ChildRejected"),
]


def _with_rollout(phase: str, message: str) -> dict[str, Any]:
    from pulsar_operator.conditions import set_condition

    ok = {"Shadowing": None, "RolledBack": False}.get(phase, True)
    obj = _operator_status(champion=CHAMPION, predictor=AVAILABLE)
    obj["status"]["conditions"] = set_condition(obj["status"]["conditions"], "Rollout", ok,
                                                phase, message, 3)
    return obj


@pytest.mark.parametrize(("phase", "expected"), [
    ("Shadowing", "Progressing"), ("RolledBack", "Degraded"), ("Promoted", "Healthy"),
    ("Retired", "Healthy")])
def test_live_rollout_health(phase: str, expected: str) -> None:
    status, message = health(_with_rollout(phase, f"{phase} message"))
    assert status == expected, message
    if expected != "Healthy":
        assert f"{phase} message" in message


@pytest.mark.parametrize(("case", "parts", "expected", "says"), OPERATOR_STATES,
                         ids=[case for case, *_ in OPERATOR_STATES])
def test_health_of_every_status_the_operator_writes(case: str, parts: dict, expected: str,
                                                    says: str) -> None:
    status, message = health(_operator_status(**{k: v for k, v in parts.items()
                                                  if v is not None}))
    assert (status, says in message) == (expected, True), f"{case}: {status}: {message}"


def test_every_stuck_state_ends_degraded_or_suspended() -> None:
    stuck = {"first training failed", "first version failed the gate", "first version awaits "
             "approval", "first rollout never ready", "pinned version missing",
             "newer version awaits approval"}
    verdicts = {case: expected for case, _, expected, _ in OPERATOR_STATES}
    assert stuck <= set(verdicts)
    assert all(verdicts[case] in ("Degraded", "Suspended") for case in stuck)
