"""Kubernetes-convention conditions: type/status/reason/message/lastTransitionTime/generation."""

from __future__ import annotations

from typing import Any

from pulsar_operator.clock import now_iso

CONDITION_TYPES = ("Ready", "Training", "Promoted", "Degraded", "Rollout")



def set_condition(conditions: list[dict[str, Any]], kind: str, ok: bool | None, reason: str,
                  message: str, generation: int) -> list[dict[str, Any]]:
    """Return conditions with `kind` set; the transition time moves only when status flips."""
    status = "Unknown" if ok is None else ("True" if ok else "False")
    previous = next((c for c in conditions if c.get("type") == kind), None)
    changed = previous is None or previous.get("status") != status
    entry = {
        "type": kind, "status": status, "reason": reason, "message": message[:1000],
        "observedGeneration": generation,
        "lastTransitionTime": (now_iso() if changed or previous is None
                               else previous.get("lastTransitionTime")),
    }
    others = [c for c in conditions if c.get("type") != kind]
    return sorted([*others, entry], key=lambda c: CONDITION_TYPES.index(c["type"])
                  if c["type"] in CONDITION_TYPES else 99)

