"""Which registered version should be champion: the one promotion decision.

The operator, the trainer's report and the demo all call this module, so they cannot disagree.
It is pure: registry facts, the SurgeModel's policy and the time come in as arguments; moving the
alias, writing status and posting Events are the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pulsar_core.gate import (
    GateVerdict,
    PromotionPolicy,
    decide,
    paired_from_tags,
    scores_from_tags,
)
from pulsar_core.registry import VersionInfo


@dataclass(frozen=True)
class Judged:
    """A verdict recorded earlier (the operator keeps it in status.challenger)."""

    version: str
    passed: bool
    awaiting_approval: bool
    reason: str


@dataclass(frozen=True)
class Judgement:
    """A fresh gate verdict on `version`, given at `judged_at`."""

    version: VersionInfo
    verdict: GateVerdict
    judged_at: datetime


@dataclass(frozen=True)
class PromotionPlan:
    """`target` becomes champion when set; `judgement` is a new verdict to record."""

    target: VersionInfo | None
    reason: str
    judgement: Judgement | None = None
    event_reason: str | None = None
    warning: bool = False


def judge(candidate: VersionInfo, champion: VersionInfo | None, policy: PromotionPolicy, *,
          approved: bool = False) -> GateVerdict:
    """The gate on a version's `pulsar.gate.*` tags against the current champion (if another)."""
    rival = champion if champion is not None and champion.version != candidate.version else None
    return decide(scores_from_tags(candidate.tags),
                  scores_from_tags(rival.tags) if rival is not None else None, policy,
                  approved=approved,
                  paired=paired_from_tags(candidate.tags, rival.version if rival else None))


def plan_promotion(versions: list[VersionInfo], champion: VersionInfo | None,
                   policy: PromotionPolicy, *, now: datetime, pinned: str | None = None,
                   judged: Judged | None = None,
                   approved_version: str | None = None) -> PromotionPlan:
    """Decide the champion. `versions` newest first; a pinned version wins; otherwise the newest
    version not judged yet meets the gate (a failed verdict is not repeated, unless the version
    waited for approval and now has it)."""
    if pinned:
        return _plan_pinned(versions, champion, pinned)
    if not versions:
        return PromotionPlan(None, "no version registered yet")
    newest = versions[0]
    if champion is not None and int(newest.version) <= int(champion.version):
        return PromotionPlan(None, f"version {champion.version} is the newest and champion")
    approved = approved_version == newest.version
    if judged is not None and judged.version == newest.version and not judged.passed \
            and not (judged.awaiting_approval and approved):
        return PromotionPlan(None, judged.reason)
    verdict = judge(newest, champion, policy, approved=approved)
    judgement = Judgement(newest, verdict, now)
    if verdict.passed:
        how = "approved and passed" if policy.mode == "manual" else "passed"
        return PromotionPlan(newest, f"version {newest.version} {how} the gate: {verdict.reason}",
                             judgement, "Promoted")
    if verdict.awaiting_approval:
        return PromotionPlan(None, f"version {newest.version} {verdict.reason}", judgement,
                             "AwaitingApproval")
    return PromotionPlan(None, f"version {newest.version} failed the gate: {verdict.reason}",
                         judgement, "GateFailed", True)


def _plan_pinned(versions: list[VersionInfo], champion: VersionInfo | None,
                 pinned: str) -> PromotionPlan:
    match = next((v for v in versions if v.version == pinned), None)
    if match is None:
        return PromotionPlan(None, f"pinned version {pinned} is not registered; fix "
                             "spec.serving.modelVersion", None, "PinnedVersionMissing", True)
    if champion is None or champion.version != pinned:
        return PromotionPlan(match, f"spec.serving.modelVersion pins version {pinned}", None,
                             "PinnedVersion")
    return PromotionPlan(None, f"serving pinned version {pinned}")
