"""Whether a gate-passed version goes through a shadow first, and how one is recorded."""

from __future__ import annotations

from datetime import datetime

from pulsar_core.registry import VersionInfo
from pulsar_operator.clock import iso
from pulsar_operator.recorder import Decision
from pulsar_operator.spec import SurgeModelSpec
from pulsar_operator.status import Rollout, Step


def takes_shadow(spec: SurgeModelSpec, event_reason: str | None,
                 champion: VersionInfo | None) -> bool:
    """A gate pass goes through a shadow unless there is nothing to compare with, the version is
    pinned, a person approved it (manual policy) or the strategy is direct."""
    return (spec.rollout.strategy == "shadow" and champion is not None
            and event_reason == "Promoted" and not spec.serving.model_version
            and spec.promotion.policy == "auto")


def start_shadow(rollout: Rollout | None, target: VersionInfo, champion: str,
                 now: datetime) -> Step[Rollout] | None:
    """status.rollout for a shadow of `target` and its Event; None when that shadow runs."""
    if rollout is not None and rollout.phase == "Shadowing" and \
            rollout.challenger == target.version:
        return None
    shadow = Rollout(phase="Shadowing", challenger=target.version, champion=champion,
                     started_at=iso(now), verdict="wait",
                     reason="challenger deployed beside the champion; gathering evidence")
    return Step(shadow, (Decision("ShadowStarted", f"version {target.version} passed the gate "
                                  f"and runs as a shadow challenger beside champion {champion}; "
                                  "promoted only on live evidence"),))
