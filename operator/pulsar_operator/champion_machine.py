"""Which version serves: the one champion state machine (pure).

Every rule that moves the `champion` alias or changes status.rollout.phase is here, in one
function, `decide`: from the current status, what the caller read (the registry's promotion
plan, the shadow's or the watch's live verdict, the predictor's health) and the time, to the
alias move (if any), the status part and the Events. Nothing here reads MLflow, NATS or the
API, nor moves anything: the callers gather the evidence (champion.sync_registry,
rollout.sync_rollout, the reconciler's revert), call `decide`, and carry the decision out
with champion.enact, whose move_champion is the one step that moves the alias and announces
it.

    registry plan   -> promote | shadow first (Shadowing) | keep the alias, show the verdict
    shadow verdict  -> wait | promote (alias -> challenger, Watching) | retire (Retired)
    watch verdict   -> wait | keep (Promoted) | roll back (alias -> previous, RolledBack)
    predictor health -> rolled out | wait | revert (alias -> last good version) | failed
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from pulsar_core.gate import scores_from_tags
from pulsar_core.live_evidence import PeriodPair, ShadowVerdict, WatchVerdictResult
from pulsar_core.promotion import Judgement, PromotionPlan
from pulsar_core.registry import VersionInfo
from pulsar_operator.builders import predictor_name
from pulsar_operator.clock import iso, parse_time
from pulsar_operator.domain import SurgeModel
from pulsar_operator.recorder import Decision
from pulsar_operator.shadow_plan import start_shadow, takes_shadow
from pulsar_operator.status import (
    Challenger,
    Champion,
    Predictor,
    Promotion,
    Rollout,
    ShadowHorizon,
    Status,
    Step,
    WatchHorizon,
)

H = TypeVar("H", ShadowHorizon, WatchHorizon)


@dataclass(frozen=True)
class ChampionMove:
    """A decision to move the `champion` alias: to `version`, replacing `previous` (None when
    the move must not record it as the last good version, as in a rollback), and why."""

    version: str
    previous: str | None
    reason: str


@dataclass(frozen=True)
class RegistryRead:
    """What MLflow said: the plan for its newest version (pulsar_core.promotion) and the
    version the alias names now."""

    plan: PromotionPlan
    champion: VersionInfo | None


@dataclass(frozen=True)
class ShadowEvidence:
    """The shadow's live evidence (status.rollout Shadowing): the paired periods and their
    verdict, or why the scores could not be read (`unavailable`; nothing is judged)."""

    pairs: Mapping[float, Sequence[PeriodPair]] | None = None
    verdict: ShadowVerdict | None = None
    unavailable: str | None = None


@dataclass(frozen=True)
class WatchEvidence:
    """The post-promotion watch's verdict (status.rollout Watching), or why the scores could
    not be read (`unavailable`; nothing is judged)."""

    result: WatchVerdictResult | None = None
    unavailable: str | None = None


@dataclass(frozen=True)
class PredictorHealth:
    """How the Deployment of status.predictor (the champion's) stands after a look at it."""

    available: bool
    exceeded: bool  # Kubernetes gave up on the rollout (ProgressDeadlineExceeded)


Evidence = RegistryRead | ShadowEvidence | WatchEvidence | PredictorHealth


@dataclass(frozen=True)
class ChampionInputs:
    """Everything `decide` looks at: the model (its spec), its status as this reconcile holds
    it, the one piece of evidence its caller gathered, and the time."""

    model: SurgeModel
    status: Status
    evidence: Evidence
    now: datetime


@dataclass(frozen=True)
class ChampionDecision:
    """The alias move (None: it stays), the status part and the Events of one decision."""

    move: ChampionMove | None
    part: Status
    decisions: tuple[Decision, ...] = ()


def decide(inputs: ChampionInputs) -> ChampionDecision:
    """Which version serves, and what status and the Events say about it. Pure."""
    evidence, status, now = inputs.evidence, inputs.status, inputs.now
    if isinstance(evidence, RegistryRead):
        step, move = promotion_step(inputs.model, status, evidence.plan, evidence.champion, now)
        return ChampionDecision(move, step.part, step.decisions)
    if isinstance(evidence, ShadowEvidence):
        return _shadow(status, evidence, now)
    if isinstance(evidence, WatchEvidence):
        return _watch(status, evidence, now)
    return _predictor(inputs.model, status, evidence, now)


def version_summary(version: VersionInfo) -> dict[str, Any]:
    """What status shows about a version: number, run and per-horizon test MAE."""
    scores = scores_from_tags(version.tags)
    maes = {f"mae{h:g}m": s.mae for h, s in sorted(scores.items()) if s.mae is not None}
    summary: dict[str, Any] = {"version": version.version, "runId": version.run_id,
                               "metrics": maes}
    if "mae30m" in maes:
        summary["mae30m"] = maes["mae30m"]
    return summary


def challenger_status(judgement: Judgement) -> dict[str, Any]:
    """status.challenger for a fresh verdict."""
    verdict = judgement.verdict
    return {**version_summary(judgement.version), "passed": verdict.passed,
            "reason": verdict.reason, "awaitingApproval": verdict.awaiting_approval,
            "judgedAt": iso(judgement.judged_at)}


def champion_moved(target: VersionInfo, previous: str | None, now: datetime) -> Status:
    """status.champion (and lastGoodVersion) once the alias points at `target`."""
    part = Status(champion=Champion.model_validate({**version_summary(target),
                                                   "promotedAt": iso(now)}))
    if previous and previous != target.version:
        part = part.updated(last_good_version=previous)
    return part


def promotion_step(model: SurgeModel, status: Status, plan: PromotionPlan,
                   champion: VersionInfo | None,
                   now: datetime) -> tuple[Step[Status], ChampionMove | None]:
    """The status parts and Events of a promotion plan, and the alias move it asks for (None:
    the alias stays, or a shadow goes first). Pure: nothing is moved here."""
    part, decisions = Status(), list[Decision]()
    if plan.judgement is not None:
        part = part.updated(challenger=challenger_status(plan.judgement))
    if plan.target is not None and takes_shadow(model.spec, plan.event_reason, champion):
        assert champion is not None  # takes_shadow needs one to compare with
        # a champion still watched against its predecessor keeps its watch: a newer version
        # shadows once it is kept or rolled back, or a regression would go unnoticed
        watching = status.rollout is not None and status.rollout.phase == "Watching"
        shadow = None if watching else start_shadow(status.rollout, plan.target,
                                                    champion.version, now)
        if shadow is not None:
            part = part.updated(rollout=shadow.part)
            decisions.extend(shadow.decisions)
        then = (f"waits until the watch of champion {champion.version} ends" if watching
                else f"shadows champion {champion.version} (spec.rollout.strategy shadow)")
        plan = replace(plan, target=None, event_reason=None, warning=False,
                       reason=f"version {plan.target.version} passed the gate and {then}")
    if plan.target is None and champion is not None:
        kept = status.champion.promoted_at if status.champion else None
        part = part.updated(champion={**version_summary(champion),
                                      "promotedAt": kept or iso(now)})
    new_verdict = plan.judgement is not None
    pinned_error = plan.event_reason == "PinnedVersionMissing" and (
        status.promotion.reason if status.promotion else None) != plan.reason
    if plan.event_reason and (plan.target is not None or new_verdict or pinned_error):
        decisions.append(Decision(plan.event_reason, plan.reason, plan.warning))
    part = part.updated(promotion=Promotion(reason=plan.reason, event_reason=plan.event_reason,
                                            checked_at=iso(now)))
    move = None if plan.target is None else ChampionMove(
        plan.target.version, champion.version if champion else None, plan.event_reason or "")
    return Step(part, tuple(decisions)), move


def _shadow(status: Status, evidence: ShadowEvidence, now: datetime) -> ChampionDecision:
    """Shadowing: promote the challenger on live evidence (then watch it), or retire it."""
    rollout = status.rollout
    assert rollout is not None, "shadow evidence without status.rollout"
    challenger, champion = str(rollout.challenger), str(rollout.champion)
    verdict = evidence.verdict
    if verdict is None:
        return ChampionDecision(None, Status(rollout=rollout.updated(
            verdict="wait", reason=f"evidence kept, not judged: {evidence.unavailable}")))
    rollout = shadow_shown(rollout, verdict)
    if verdict.verdict == "wait":
        return ChampionDecision(None, Status(rollout=rollout))
    rollout = rollout.updated(decided_at=iso(now))
    if verdict.verdict == "promote":
        last = max(p.period_start for periods in (evidence.pairs or {}).values()
                   for p in periods)
        watching = rollout.updated(phase="Watching", promoted_at=iso(now), previous=champion,
                                   evidence_until=iso(last))
        return ChampionDecision(
            ChampionMove(challenger, champion, "ShadowPromoted"), Status(rollout=watching),
            (Decision("ShadowPromoted", f"version {challenger} promoted on live evidence: "
                      f"{verdict.reason}"),))
    retired = (status.challenger or Challenger()).updated(
        version=challenger, passed=False, awaiting_approval=False,
        reason=f"retired after shadow: {verdict.reason}", judged_at=iso(now))
    return ChampionDecision(
        None, Status(challenger=retired, rollout=rollout.updated(phase="Retired")),
        (Decision("ShadowRetired", f"version {challenger} retired; champion {champion} keeps "
                  f"serving: {verdict.reason}", True),))


def _watch(status: Status, evidence: WatchEvidence, now: datetime) -> ChampionDecision:
    """Watching: keep the new champion, or roll the alias back to the one it replaced."""
    rollout = status.rollout
    assert rollout is not None, "watch evidence without status.rollout"
    current, previous = str(rollout.challenger), str(rollout.previous)
    result = evidence.result
    if result is None:
        return ChampionDecision(None, Status(rollout=rollout.updated(
            watch=f"evidence kept, not judged: {evidence.unavailable}")))
    rollout = watch_shown(rollout, result)
    if result.verdict == "wait":
        return ChampionDecision(None, Status(rollout=rollout))
    if result.verdict == "keep":
        return ChampionDecision(None, Status(rollout=rollout.updated(
            phase="Promoted", watched_until=iso(now))))
    back = Status(
        last_good_version=previous,
        challenger=Challenger(version=current, passed=False, awaiting_approval=False,
                              reason=f"rolled back after promotion: {result.reason}",
                              judged_at=iso(now)),
        rollout=rollout.updated(phase="RolledBack", rolled_back_at=iso(now)))
    return ChampionDecision(ChampionMove(previous, None, "RolledBack"), back, (
        Decision("RolledBack", f"version {current} rolled back to {previous}: "
                 f"{result.reason}", True),))


def _predictor(model: SurgeModel, status: Status, health: PredictorHealth,
               now: datetime) -> ChampionDecision:
    """A predictor available once is rolled out. One still unavailable past
    spec.serving.rolloutDeadlineSeconds, or given up by Kubernetes, sends the alias back to
    the last good version, unless the spec pins one or there is none: then status says the
    rollout failed (a Warning when that is news) instead of waiting for ever."""
    predictor = status.predictor or Predictor()
    if health.available:
        return ChampionDecision(None, Status(predictor=predictor.without("rollout_failed")
                                             .updated(rolled_out_at=predictor.rolled_out_at
                                                      or iso(now))))
    if predictor.rolled_out_at and not health.exceeded:
        return ChampionDecision(None, Status())  # a later dip is no failed rollout
    serving = model.spec.serving
    started = parse_time(predictor.rollout_started_at) or now
    late = (now - started).total_seconds() > serving.rollout_deadline_seconds
    if not (late or health.exceeded):
        return ChampionDecision(None, Status())
    last_good, version = status.last_good_version, predictor.version
    if last_good and last_good != version and not serving.model_version:
        return _revert(status, last_good, now)
    failed = (f"predictor for version {version} not available within "
              f"{serving.rollout_deadline_seconds}s and no earlier version to revert to; see "
              f"`kubectl -n {model.namespace} describe deploy {predictor_name(model)}`")
    news = (Decision("RolloutFailed", failed, True),) if failed != predictor.rollout_failed \
        else ()
    return ChampionDecision(None, Status(predictor=predictor.updated(rollout_failed=failed)),
                            news)


def _revert(status: Status, to: str, now: datetime) -> ChampionDecision:
    """Move the alias back to `to`: the predictor of the champion never became ready."""
    bad = status.champion.version if status.champion is not None else None
    challenger = (status.challenger or Challenger()).updated(
        version=bad, passed=False, reason=f"predictor for version {bad} never became ready",
        judged_at=iso(now))
    return ChampionDecision(ChampionMove(to, None, "RolloutReverted"),
                            Status(challenger=challenger), (
        Decision("RolloutReverted", f"predictor for version {bad} was not ready within the "
                 f"deadline; reverted to version {to}", True),))


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def shadow_shown(rollout: Rollout, verdict: ShadowVerdict) -> Rollout:
    """status.rollout showing a shadow verdict and its per-horizon evidence."""
    rows = [ShadowHorizon(horizon_minutes=e.horizon_minutes, scored=e.scored, periods=e.periods,
                          champion_live_mae=_round(e.champion_mae),
                          challenger_live_mae=_round(e.challenger_mae), periods_won=e.wins,
                          p_value=_round(e.p_value, 6)) for e in verdict.horizons]
    first = _at_30m(rows) or ShadowHorizon(horizon_minutes=30.0)
    return rollout.updated(verdict=verdict.verdict, reason=verdict.reason, test=verdict.test,
                           horizons=rows, champion_live_mae30m=first.champion_live_mae,
                           challenger_live_mae30m=first.challenger_live_mae)


def watch_shown(rollout: Rollout, result: WatchVerdictResult) -> Rollout:
    """status.rollout showing a watch verdict and its per-horizon evidence."""
    rows = [WatchHorizon(horizon_minutes=r.horizon_minutes, scored=r.scored,
                         champion_live_mae=_round(r.live_mae), previous_scored=r.previous_scored,
                         previous_live_mae=_round(r.previous_mae),
                         regression_pct=_round(r.regression_pct, 2)) for r in result.horizons]
    first = _at_30m(rows) or WatchHorizon(horizon_minutes=30.0)
    return rollout.updated(watch_verdict=result.verdict, watch_reason=result.reason,
                           watch_horizons=rows, champion_live_mae30m=first.champion_live_mae)


def _at_30m(rows: Sequence[H]) -> H | None:
    """The 30-minute row (the printer column's), else the first."""
    return next((r for r in rows if r.horizon_minutes == 30.0), rows[0] if rows else None)
