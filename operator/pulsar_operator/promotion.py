"""Pure promotion planning: registry facts + spec + status -> which version should be champion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pulsar_core.gate import decide, paired_from_tags, scores_from_tags
from pulsar_core.registry import VersionInfo
from pulsar_operator.conditions import now_iso
from pulsar_operator.spec import SurgeModelSpec


@dataclass(frozen=True)
class PromotionPlan:
    """`target` becomes champion when set; `challenger` is the verdict to record."""

    target: VersionInfo | None
    reason: str
    challenger: dict[str, Any] | None = None
    event_reason: str | None = None
    warning: bool = False


def version_summary(version: VersionInfo) -> dict[str, Any]:
    """What status shows about a version: number, run and per-horizon test MAE."""
    scores = scores_from_tags(version.tags)
    metrics = {f"mae{h:g}m": s.mae for h, s in sorted(scores.items()) if s.mae is not None}
    summary: dict[str, Any] = {"version": version.version, "runId": version.run_id,
                               "metrics": metrics}
    if "mae30m" in metrics:
        summary["mae30m"] = metrics["mae30m"]
    return summary


def plan_promotion(spec: SurgeModelSpec, versions: list[VersionInfo],
                   champion: VersionInfo | None, judged: dict[str, Any] | None,
                   approved_version: str | None) -> PromotionPlan:
    """Decide the champion. Pinned wins; otherwise the newest unjudged version meets the gate."""
    pinned = spec.serving.model_version
    if pinned:
        match = next((v for v in versions if v.version == pinned), None)
        if match is None:
            return PromotionPlan(None, f"pinned version {pinned} is not registered; fix "
                                 "spec.serving.modelVersion", None, "PinnedVersionMissing", True)
        if champion is None or champion.version != pinned:
            return PromotionPlan(match, f"spec.serving.modelVersion pins version {pinned}",
                                 None, "PinnedVersion")
        return PromotionPlan(None, f"serving pinned version {pinned}")
    if not versions:
        return PromotionPlan(None, "no version registered yet")
    newest = versions[0]
    if champion is not None and int(newest.version) <= int(champion.version):
        return PromotionPlan(None, f"version {champion.version} is the newest and champion")
    approved = approved_version == newest.version
    already = judged and judged.get("version") == newest.version and not judged.get("passed")
    if already and not (judged.get("awaitingApproval") and approved):  # type: ignore[union-attr]
        return PromotionPlan(None, str(judged.get("reason", "")), judged)
    champion_scores = scores_from_tags(champion.tags) if champion is not None else None
    paired = paired_from_tags(newest.tags, champion.version if champion is not None else None)
    verdict = decide(scores_from_tags(newest.tags), champion_scores, spec.promotion.to_policy(),
                     approved=approved, paired=paired)
    challenger = {**version_summary(newest), "passed": verdict.passed, "reason": verdict.reason,
                  "awaitingApproval": verdict.awaiting_approval, "judgedAt": now_iso()}
    if verdict.passed:
        how = "approved and passed" if spec.promotion.policy == "manual" else "passed"
        return PromotionPlan(newest, f"version {newest.version} {how} the gate: {verdict.reason}",
                             challenger, "Promoted")
    if verdict.awaiting_approval:
        return PromotionPlan(None, f"version {newest.version} {verdict.reason}", challenger,
                             "AwaitingApproval")
    return PromotionPlan(None, f"version {newest.version} failed the gate: {verdict.reason}",
                         challenger, "GateFailed", True)
