"""Live rollout step of a reconcile: shadow a gate-passed challenger, promote or retire it on
paired live evidence, watch a new champion and roll it back on live regression.

status.rollout.phase: Shadowing -> Watching (promoted) | Retired; Watching -> Promoted (kept) |
RolledBack. The decisions are pulsar_core.live_evidence's; this module only fetches (score
stream, registry), applies (challenger Deployment, alias) and reports (status, Event, metric).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from pulsar_core.live_evidence import (
    ShadowVerdict,
    WatchVerdictResult,
    judge_shadow,
    judge_watch,
    pair_periods,
    period_scores,
)
from pulsar_core.live_scores import scores_subject
from pulsar_operator import metrics
from pulsar_operator.builders import build_predictor_deployment, dns_name, labels
from pulsar_operator.champion import ChampionMove, move_champion
from pulsar_operator.children import holds
from pulsar_operator.clock import iso, parse_time
from pulsar_operator.conditions import set_condition
from pulsar_operator.domain import SurgeModel
from pulsar_operator.kube import DEPLOYMENTS, KubeError
from pulsar_operator.recorder import Decision
from pulsar_operator.runtime import Runtime
from pulsar_operator.score_book import ScoresUnavailable
from pulsar_operator.status import (
    Challenger,
    Condition,
    Rollout,
    ShadowHorizon,
    Status,
    Step,
    WatchHorizon,
)

H = TypeVar("H", ShadowHorizon, WatchHorizon)

COMPONENT = "challenger"  # the Service selects component=predictor only: no client reaches it
LIVE_PHASES = ("Shadowing", "Watching")  # judged again every rollout_check_seconds


def challenger_name(model: SurgeModel) -> str:
    return dns_name(model.name, "-challenger")


def build_challenger_deployment(model: SurgeModel, version: str) -> dict[str, Any]:
    """The champion's predictor Deployment for `version`, one replica, PULSAR_ROLE=shadow, and
    labelled component=challenger so neither the Service nor the budget selects its pods."""
    deployment = copy.deepcopy(build_predictor_deployment(model, version))
    meta, spec = deployment["metadata"], deployment["spec"]
    meta["name"] = challenger_name(model)
    meta["labels"] = labels(model, COMPONENT)
    selector = {key: value for key, value in labels(model, COMPONENT).items()
                if key in ("app.kubernetes.io/instance", "app.kubernetes.io/component")}
    spec["replicas"] = 1
    spec["selector"] = {"matchLabels": selector}
    spec["template"]["metadata"]["labels"] = labels(model, COMPONENT)
    container = spec["template"]["spec"]["containers"][0]
    container["env"] = sorted([e for e in container["env"] if e["name"] != "PULSAR_ROLE"]
                              + [{"name": "PULSAR_ROLE", "value": "shadow"}],
                              key=lambda e: e["name"])
    return deployment


async def sync_rollout(runtime: Runtime, model: SurgeModel, status: Status,
                       now: datetime) -> Step[Status]:
    """One step of status.rollout (and the champion it moves), with the Rollout condition."""
    rollout = status.rollout
    step = Step[Status](Status())
    if rollout is not None and rollout.phase == "Shadowing" \
            and not model.spec.serving.model_version:
        await _apply_challenger(runtime, model, str(rollout.challenger))
        step = await _shadow(runtime, model, rollout, status.challenger, now)
    elif rollout is not None and rollout.phase == "Watching":
        step = await _watch(runtime, model, rollout, now)
    after = status.merged(step.part)
    conditions = _condition(after.rollout, after.conditions, model.generation)
    part = step.part if conditions is None else step.part.updated(conditions=conditions)
    return Step(part, step.decisions)


async def remove_challenger(runtime: Runtime, model: SurgeModel,
                            rollout: Rollout | None) -> Rollout | None:
    """Once a shadow ends, scale its challenger down (once per shadow, not a GET per
    reconcile); the rollout marked so, or None when there is nothing to do."""
    if rollout is None or rollout.phase == "Shadowing" or rollout.challenger_removed:
        return None
    await _scale_down(runtime, model)
    return rollout.updated(challenger_removed=True)


async def _scale_down(runtime: Runtime, model: SurgeModel) -> None:
    """Scale the challenger to zero: its pods go, the owned Deployment stays (garbage-collected
    with the model), so the operator needs no delete permission on Deployments."""
    try:
        await runtime.kube.patch(DEPLOYMENTS, model.namespace, challenger_name(model),
                                 {"spec": {"replicas": 0}})
    except KubeError as error:
        if error.status != 404:
            raise


async def _apply_challenger(runtime: Runtime, model: SurgeModel, version: str) -> None:
    wanted = build_challenger_deployment(model, version)
    live = await runtime.kube.get(DEPLOYMENTS, model.namespace, challenger_name(model))
    if live is None or not holds(live, wanted):
        await runtime.kube.apply(DEPLOYMENTS, wanted)


async def _errors(runtime: Runtime, model: SurgeModel, version: str) -> Any:
    book = runtime.score_book
    if book is None:
        raise ScoresUnavailable(runtime.nats_error or "NATS not connected")
    return await book.errors(scores_subject(model.spec.city, model.spec.service_type),
                             model.registered_model, version)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


async def _shadow(runtime: Runtime, model: SurgeModel, rollout: Rollout,
                  judged: Challenger | None, now: datetime) -> Step[Status]:
    challenger, champion = str(rollout.challenger), str(rollout.champion)
    try:
        pairs = pair_periods(await _errors(runtime, model, champion),
                             await _errors(runtime, model, challenger))
    except ScoresUnavailable as error:
        return Step(Status(rollout=rollout.updated(
            verdict="wait", reason=f"evidence kept, not judged: {error}")))
    started = parse_time(rollout.started_at) or now
    verdict = judge_shadow(pairs, model.spec.training.horizons_minutes, started, now,
                           model.spec.rollout.to_policy())
    rollout = _shown(model, rollout, verdict)
    if verdict.verdict == "wait":
        return Step(Status(rollout=rollout))
    metrics.ROLLOUT_VERDICTS.labels(verdict.verdict).inc()
    rollout = rollout.updated(decided_at=iso(now))
    if verdict.verdict == "promote":
        moved = await move_champion(runtime, model,
                                    ChampionMove(challenger, champion, "ShadowPromoted"), now)
        last = max(p.period_start for periods in pairs.values() for p in periods)
        watching = rollout.updated(phase="Watching", promoted_at=iso(now), previous=champion,
                                   evidence_until=iso(last))
        return Step(moved.updated(rollout=watching), (
            Decision("ShadowPromoted", f"version {challenger} promoted on live evidence: "
                     f"{verdict.reason}"),))
    retired = (judged or Challenger()).updated(
        version=challenger, passed=False, awaiting_approval=False,
        reason=f"retired after shadow: {verdict.reason}", judged_at=iso(now))
    return Step(Status(challenger=retired, rollout=rollout.updated(phase="Retired")), (
        Decision("ShadowRetired", f"version {challenger} retired; champion {champion} keeps "
                 f"serving: {verdict.reason}", True),))


def _shown(model: SurgeModel, rollout: Rollout, verdict: ShadowVerdict) -> Rollout:
    rows = [ShadowHorizon(horizon_minutes=e.horizon_minutes, scored=e.scored, periods=e.periods,
                          champion_live_mae=_round(e.champion_mae),
                          challenger_live_mae=_round(e.challenger_mae), periods_won=e.wins,
                          p_value=_round(e.p_value, 6)) for e in verdict.horizons]
    first = _at_30m(rows) or ShadowHorizon(horizon_minutes=30.0)
    for row in rows:
        for role, mae in (("champion", row.champion_live_mae),
                          ("challenger", row.challenger_live_mae)):
            if mae is not None:
                metrics.LIVE_MAE.labels(model.namespace, model.name, role,
                                        f"{row.horizon_minutes:g}").set(mae)
    return rollout.updated(verdict=verdict.verdict, reason=verdict.reason, test=verdict.test,
                           horizons=rows, champion_live_mae30m=first.champion_live_mae,
                           challenger_live_mae30m=first.challenger_live_mae)


def _at_30m(rows: Sequence[H]) -> H | None:
    """The 30-minute row (the printer column's), else the first."""
    return next((r for r in rows if r.horizon_minutes == 30.0), rows[0] if rows else None)


async def _watch(runtime: Runtime, model: SurgeModel, rollout: Rollout,
                 now: datetime) -> Step[Status]:
    current, previous = str(rollout.challenger), str(rollout.previous)
    try:
        after = period_scores(await _errors(runtime, model, current))
        before = period_scores(await _errors(runtime, model, previous))
    except ScoresUnavailable as error:
        return Step(Status(rollout=rollout.updated(watch=f"evidence kept, not judged: {error}")))
    promoted = parse_time(rollout.promoted_at) or now
    split = parse_time(rollout.evidence_until) or promoted
    result = judge_watch(after, before, model.spec.training.horizons_minutes, split, promoted,
                         now, model.spec.rollout.to_policy())
    rollout = _watch_shown(model, rollout, result)
    if result.verdict == "wait":
        return Step(Status(rollout=rollout))
    if result.verdict == "keep":
        return Step(Status(rollout=rollout.updated(phase="Promoted", watched_until=iso(now))))
    moved = await move_champion(runtime, model, ChampionMove(previous, None, "RolledBack"), now)
    metrics.ROLLBACKS.inc()
    back = moved.updated(
        last_good_version=previous,
        challenger=Challenger(version=current, passed=False, awaiting_approval=False,
                              reason=f"rolled back after promotion: {result.reason}",
                              judged_at=iso(now)),
        rollout=rollout.updated(phase="RolledBack", rolled_back_at=iso(now)))
    return Step(back, (Decision("RolledBack", f"version {current} rolled back to {previous}: "
                                f"{result.reason}", True),))


def _watch_shown(model: SurgeModel, rollout: Rollout, result: WatchVerdictResult) -> Rollout:
    rows = [WatchHorizon(horizon_minutes=r.horizon_minutes, scored=r.scored,
                         champion_live_mae=_round(r.live_mae), previous_scored=r.previous_scored,
                         previous_live_mae=_round(r.previous_mae),
                         regression_pct=_round(r.regression_pct, 2)) for r in result.horizons]
    first = _at_30m(rows) or WatchHorizon(horizon_minutes=30.0)
    for row in rows:
        if row.champion_live_mae is not None:
            metrics.LIVE_MAE.labels(model.namespace, model.name, "champion",
                                    f"{row.horizon_minutes:g}").set(row.champion_live_mae)
    return rollout.updated(watch_verdict=result.verdict, watch_reason=result.reason,
                           watch_horizons=rows, champion_live_mae30m=first.champion_live_mae)


def _condition(rollout: Rollout | None, conditions: list[Condition] | None,
               generation: int) -> list[dict[str, Any]] | None:
    """Rollout condition: Unknown while shadowing or watching, False after a rollback."""
    phase = rollout.phase if rollout is not None else None
    held = {"Shadowing": None, "Watching": None, "Promoted": True, "Retired": True,
            "RolledBack": False}  # the condition's reason is the phase, one of these
    if rollout is None or phase not in held:
        return None
    message = (rollout.watch_reason if phase in ("RolledBack", "Watching", "Promoted")
               else rollout.reason) or ""
    return set_condition([c.dump() for c in conditions or []], "Rollout", held[phase], phase,
                         message, generation)
