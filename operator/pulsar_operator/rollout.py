"""Live rollout step of a reconcile: shadow a gate-passed challenger, promote or retire it on
paired live evidence, watch a new champion and roll it back on live regression.

status.rollout.phase: Shadowing -> Watching (promoted) | Retired; Watching -> Promoted (kept) |
RolledBack. The verdicts are pulsar_core.live_evidence's and what they do to the champion is
champion_machine.decide's; this module only fetches (score stream), applies (challenger
Deployment, alias through champion.enact) and reports (metrics).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from pulsar_core.live_evidence import judge_shadow, judge_watch, pair_periods, period_scores
from pulsar_core.live_scores import scores_subject
from pulsar_operator import metrics
from pulsar_operator.builders import build_predictor_deployment, dns_name, labels
from pulsar_operator.champion import enact
from pulsar_operator.champion_machine import ChampionInputs, ShadowEvidence, WatchEvidence, decide
from pulsar_operator.children import holds
from pulsar_operator.clock import parse_time
from pulsar_operator.conditions import set_condition
from pulsar_operator.domain import SurgeModel
from pulsar_operator.kube import DEPLOYMENTS, KubeError
from pulsar_operator.runtime import Runtime
from pulsar_operator.score_book import ScoresUnavailable
from pulsar_operator.status import Condition, Rollout, Status, Step

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
        step = await _shadow(runtime, model, status, rollout, now)
    elif rollout is not None and rollout.phase == "Watching":
        step = await _watch(runtime, model, status, rollout, now)
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


async def _shadow(runtime: Runtime, model: SurgeModel, status: Status, rollout: Rollout,
                  now: datetime) -> Step[Status]:
    """Read both versions' live errors, judge them, and carry out what decide makes of it."""
    challenger, champion = str(rollout.challenger), str(rollout.champion)
    try:
        pairs = pair_periods(await _errors(runtime, model, champion),
                             await _errors(runtime, model, challenger))
    except ScoresUnavailable as error:
        evidence = ShadowEvidence(unavailable=str(error))
    else:
        started = parse_time(rollout.started_at) or now
        evidence = ShadowEvidence(pairs, judge_shadow(
            pairs, model.spec.training.horizons_minutes, started, now,
            model.spec.rollout.to_policy()))
    decision = decide(ChampionInputs(model, status, evidence, now))
    if evidence.verdict is not None:
        _live_maes(model, decision.part.rollout)
        if evidence.verdict.verdict != "wait":
            metrics.ROLLOUT_VERDICTS.labels(evidence.verdict.verdict).inc()
    return await enact(runtime, model, decision, now)


async def _watch(runtime: Runtime, model: SurgeModel, status: Status, rollout: Rollout,
                 now: datetime) -> Step[Status]:
    """Read the new and the previous champion's live errors, judge the watch, carry it out."""
    current, previous = str(rollout.challenger), str(rollout.previous)
    try:
        after = period_scores(await _errors(runtime, model, current))
        before = period_scores(await _errors(runtime, model, previous))
    except ScoresUnavailable as error:
        evidence = WatchEvidence(unavailable=str(error))
    else:
        promoted = parse_time(rollout.promoted_at) or now
        split = parse_time(rollout.evidence_until) or promoted
        evidence = WatchEvidence(judge_watch(after, before, model.spec.training.horizons_minutes,
                                             split, promoted, now,
                                             model.spec.rollout.to_policy()))
    decision = decide(ChampionInputs(model, status, evidence, now))
    if evidence.result is not None:
        _live_maes(model, decision.part.rollout, watch=True)
    step = await enact(runtime, model, decision, now)
    if evidence.result is not None and evidence.result.verdict == "rollback":
        metrics.ROLLBACKS.inc()
    return step


def _live_maes(model: SurgeModel, rollout: Rollout | None, watch: bool = False) -> None:
    """The live MAE gauges from the rows a shadow's (or a watch's) verdict put in status."""
    if rollout is None:
        return
    shown: list[tuple[float, str, float | None]] = [
        (r.horizon_minutes, "champion", r.champion_live_mae)
        for r in rollout.watch_horizons or []] if watch else [
        (r.horizon_minutes, role, mae) for r in rollout.horizons or []
        for role, mae in (("champion", r.champion_live_mae),
                          ("challenger", r.challenger_live_mae))]
    for horizon, role, mae in shown:
        if mae is not None:
            metrics.LIVE_MAE.labels(model.namespace, model.name, role, f"{horizon:g}").set(mae)


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
