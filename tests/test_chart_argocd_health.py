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
