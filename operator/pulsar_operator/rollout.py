"""Live rollout step of a reconcile: shadow a gate-passed challenger, promote or retire it on
paired live evidence, watch a new champion and roll it back on live regression.

status.rollout.phase: Shadowing -> Watching (promoted) | Retired; Watching -> Promoted (kept) |
RolledBack. The decisions are pulsar_core.live_evidence's; this module only fetches (score
stream, registry), applies (challenger Deployment, alias) and reports (status, Event, metric).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from pulsar_core.live_evidence import (
    HorizonEvidence,
    ShadowVerdict,
    WatchVerdictResult,
    judge_shadow,
    judge_watch,
    pair_periods,
    period_scores,
)
from pulsar_core.live_scores import scores_subject
from pulsar_operator import metrics
from pulsar_operator.builders import (
    SurgeModel,
    _dns_name,
    build_predictor_deployment,
    labels,
)
from pulsar_operator.champion import _call, move_champion, version_summary
from pulsar_operator.children import holds
from pulsar_operator.conditions import iso, set_condition
from pulsar_operator.kube import DEPLOYMENTS, KubeError
from pulsar_operator.recorder import Decision
from pulsar_operator.runtime import Runtime
from pulsar_operator.score_book import ScoresUnavailable
from pulsar_operator.triggers import parse_time

COMPONENT = "challenger"  # the Service selects component=predictor only: no client reaches it
LIVE_PHASES = ("Shadowing", "Watching")  # judged again every rollout_check_seconds


def challenger_name(model: SurgeModel) -> str:
    return _dns_name(model.name, "-challenger")


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


async def sync_rollout(runtime: Runtime, model: SurgeModel, status: dict[str, Any],
                       now: datetime, decisions: list[Decision]) -> None:
    """Advance status.rollout one step; the challenger Deployment exists only while shadowing."""
    rollout = status.get("rollout") or {}
    phase = rollout.get("phase")
    if phase == "Shadowing" and not model.spec.serving.model_version:
        await _apply_challenger(runtime, model, str(rollout["challenger"]))
        await _shadow(runtime, model, status, now, decisions)
    elif phase == "Watching":
        await _watch(runtime, model, status, now, decisions)
    after = status.get("rollout") or {}
    if after and after.get("phase") != "Shadowing" and not after.get("challengerRemoved"):
        await _scale_down(runtime, model)
        after["challengerRemoved"] = True  # once per shadow, not a GET per reconcile
    _condition(status, model.generation)


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


def _horizon_rows(evidence: tuple[HorizonEvidence, ...]) -> list[dict[str, Any]]:
    return [{"horizonMinutes": e.horizon_minutes, "scored": e.scored, "periods": e.periods,
             "championLiveMae": _round(e.champion_mae),
             "challengerLiveMae": _round(e.challenger_mae),
             "periodsWon": e.wins, "pValue": _round(e.p_value, 6)} for e in evidence]


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


async def _shadow(runtime: Runtime, model: SurgeModel, status: dict[str, Any], now: datetime,
                  decisions: list[Decision]) -> None:
    rollout = status["rollout"]
    challenger, champion = str(rollout["challenger"]), str(rollout["champion"])
    try:
        pairs = pair_periods(await _errors(runtime, model, champion),
                             await _errors(runtime, model, challenger))
    except ScoresUnavailable as error:
        rollout.update(verdict="wait", reason=f"evidence kept, not judged: {error}")
        return
    started = parse_time(rollout.get("startedAt")) or now
    verdict = judge_shadow(pairs, model.spec.training.horizons_minutes, started, now,
                           model.spec.rollout.to_policy())
    _show(model, rollout, verdict)
    if verdict.verdict == "wait":
        return
    metrics.ROLLOUT_VERDICTS.labels(verdict.verdict).inc()
    rollout.update(decidedAt=iso(now))
    if verdict.verdict == "promote":
        target = await _call(runtime, "get_version", model.registered_model, challenger)
        await move_champion(runtime, model, status, target, champion, "ShadowPromoted")
        last = max(p.period_start for periods in pairs.values() for p in periods)
        rollout.update(phase="Watching", promotedAt=iso(now), previous=champion,
                       evidenceUntil=iso(last))
        decisions.append(Decision("ShadowPromoted", f"version {challenger} promoted on live "
                                  f"evidence: {verdict.reason}"))
        return
    status["challenger"] = {**(status.get("challenger") or {}), "version": challenger,
                            "passed": False, "awaitingApproval": False,
                            "reason": f"retired after shadow: {verdict.reason}",
                            "judgedAt": iso(now)}
    rollout.update(phase="Retired")
    decisions.append(Decision("ShadowRetired", f"version {challenger} retired; champion "
                              f"{champion} keeps serving: {verdict.reason}", True))


def _show(model: SurgeModel, rollout: dict[str, Any], verdict: ShadowVerdict) -> None:
    rows = _horizon_rows(verdict.horizons)
    rollout.update(verdict=verdict.verdict, reason=verdict.reason, test=verdict.test,
                   horizons=rows)
    first = next((r for r in rows if r["horizonMinutes"] == 30.0), rows[0] if rows else {})
    rollout["championLiveMae30m"] = first.get("championLiveMae")
    rollout["challengerLiveMae30m"] = first.get("challengerLiveMae")
    for row in rows:
        for role, key in (("champion", "championLiveMae"), ("challenger", "challengerLiveMae")):
            if row[key] is not None:
                metrics.LIVE_MAE.labels(model.namespace, model.name, role,
                                        f"{row['horizonMinutes']:g}").set(row[key])


async def _watch(runtime: Runtime, model: SurgeModel, status: dict[str, Any], now: datetime,
                 decisions: list[Decision]) -> None:
    rollout = status["rollout"]
    current, previous = str(rollout["challenger"]), str(rollout["previous"])
    try:
        after = period_scores(await _errors(runtime, model, current))
        before = period_scores(await _errors(runtime, model, previous))
    except ScoresUnavailable as error:
        rollout.update(watch=f"evidence kept, not judged: {error}")
        return
    promoted = parse_time(rollout.get("promotedAt")) or now
    split = parse_time(rollout.get("evidenceUntil")) or promoted
    result = judge_watch(after, before, model.spec.training.horizons_minutes, split, promoted,
                         now, model.spec.rollout.to_policy())
    _show_watch(model, rollout, result)
    if result.verdict == "wait":
        return
    if result.verdict == "keep":
        rollout.update(phase="Promoted", watchedUntil=iso(now))
        return
    target = await _call(runtime, "get_version", model.registered_model, previous)
    await move_champion(runtime, model, status, target, None, "RolledBack")
    status["lastGoodVersion"] = previous
    status["challenger"] = {"version": current, "passed": False, "awaitingApproval": False,
                            "reason": f"rolled back after promotion: {result.reason}",
                            "judgedAt": iso(now)}
    status["champion"] = {**version_summary(target), "promotedAt": iso(now)}
    rollout.update(phase="RolledBack", rolledBackAt=iso(now))
    metrics.ROLLBACKS.inc()
    decisions.append(Decision("RolledBack", f"version {current} rolled back to {previous}: "
                              f"{result.reason}", True))


def _show_watch(model: SurgeModel, rollout: dict[str, Any], result: WatchVerdictResult) -> None:
    rows = [{"horizonMinutes": r.horizon_minutes, "scored": r.scored,
             "championLiveMae": _round(r.live_mae), "previousScored": r.previous_scored,
             "previousLiveMae": _round(r.previous_mae),
             "regressionPct": _round(r.regression_pct, 2)} for r in result.horizons]
    rollout.update(watchVerdict=result.verdict, watchReason=result.reason, watchHorizons=rows)
    first = next((r for r in rows if r["horizonMinutes"] == 30.0), rows[0] if rows else {})
    rollout["championLiveMae30m"] = first.get("championLiveMae")
    for row in rows:
        if row["championLiveMae"] is not None:
            metrics.LIVE_MAE.labels(model.namespace, model.name, "champion",
                                    f"{row['horizonMinutes']:g}").set(row["championLiveMae"])


def _condition(status: dict[str, Any], generation: int) -> None:
    """Rollout condition: Unknown while shadowing or watching, False after a rollback."""
    rollout = status.get("rollout") or {}
    phase = rollout.get("phase")
    held = {"Shadowing": None, "Watching": None, "Promoted": True, "Retired": True,
            "RolledBack": False}  # the condition's reason is the phase, one of these
    if phase not in held:
        return
    message = str(rollout.get("watchReason") if phase in ("RolledBack", "Watching", "Promoted")
                  else rollout.get("reason") or "")
    status["conditions"] = set_condition(status.get("conditions") or [], "Rollout", held[phase],
                                         phase, message, generation)
