"""Whether a gate-passed version goes through a shadow first, and how one is recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pulsar_core.registry import VersionInfo
from pulsar_operator.conditions import iso
from pulsar_operator.recorder import Decision
from pulsar_operator.spec import SurgeModelSpec


def takes_shadow(spec: SurgeModelSpec, event_reason: str | None,
                 champion: VersionInfo | None) -> bool:
    """A gate pass goes through a shadow unless there is nothing to compare with, the version is
    pinned, a person approved it (manual policy) or the strategy is direct."""
    return (spec.rollout.strategy == "shadow" and champion is not None
            and event_reason == "Promoted" and not spec.serving.model_version
            and spec.promotion.policy == "auto")


def start_shadow(status: dict[str, Any], target: VersionInfo, champion: str,
                 now: datetime) -> Decision | None:
    """Record a shadow for `target` (kept as is if it already runs); the Event when new."""
    rollout = status.get("rollout") or {}
    if rollout.get("phase") == "Shadowing" and rollout.get("challenger") == target.version:
        return None
    status["rollout"] = {"phase": "Shadowing", "challenger": target.version,
                         "champion": champion, "startedAt": iso(now), "verdict": "wait",
                         "reason": "challenger deployed beside the champion; gathering evidence"}
    return Decision("ShadowStarted", f"version {target.version} passed the gate and runs as a "
                    f"shadow challenger beside champion {champion}; promoted only on live "
                    "evidence")
