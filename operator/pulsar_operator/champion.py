"""Registry step of a reconcile: read MLflow, plan the champion (pulsar_core.promotion), move
the alias, announce it, and show both versions in status."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pulsar_core.events import MODEL_PROMOTED, ModelPromoted, SurgeModelRef
from pulsar_core.gate import scores_from_tags
from pulsar_core.promotion import Judged, Judgement, PromotionPlan, plan_promotion
from pulsar_core.registry import RegistryUnavailable, VersionInfo
from pulsar_operator import metrics
from pulsar_operator.clock import iso
from pulsar_operator.domain import SurgeModel
from pulsar_operator.mlflow_client import AsyncRegistry
from pulsar_operator.names import APPROVE_ANNOTATION
from pulsar_operator.recorder import Decision
from pulsar_operator.runtime import Runtime
from pulsar_operator.shadow_plan import start_shadow, takes_shadow
from pulsar_operator.status import Challenger, Champion, Promotion, Status, Step

log = logging.getLogger(__name__)


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


def judged_from_status(challenger: Challenger | None) -> Judged | None:
    """The verdict status.challenger recorded, if it names a version."""
    if challenger is None or challenger.version is None:
        return None
    return Judged(challenger.version, bool(challenger.passed), bool(challenger.awaiting_approval),
                  "" if challenger.reason is None else challenger.reason)


class AliasNotMoved(RegistryUnavailable):
    """MLflow failed while moving the alias, after a verdict that status still keeps."""

    def __init__(self, cause: RegistryUnavailable, kept: Status) -> None:
        RuntimeError.__init__(self, str(cause))
        self.uri, self.kept = cause.uri, kept


@dataclass(frozen=True)
class ChampionMove:
    """A decision to move the `champion` alias: to `version`, replacing `previous` (None when
    the move must not record it as the last good version, as in a rollback), and why."""

    version: str
    previous: str | None
    reason: str


async def announce(runtime: Runtime, model: SurgeModel, version: str,
                   previous: str | None) -> None:
    """Publish ModelPromoted: news for dashboards and for standalone predictors that follow
    the alias. The operator's own predictors are pinned and move by a Deployment edit, so NATS
    trouble here is logged, never fatal."""
    if runtime.publisher is None:
        return
    event = ModelPromoted(model_name=model.registered_model, version=version,
                          previous_version=previous,
                          surge_model=SurgeModelRef(namespace=model.namespace, name=model.name))
    try:
        await runtime.publisher.publish(MODEL_PROMOTED, event.model_dump_json().encode())
    except Exception as error:  # NATS down must not block promotion; the alias is the truth
        log.warning("could not publish %s for %s: %s", MODEL_PROMOTED, model.name, error)


def champion_moved(target: VersionInfo, previous: str | None, now: datetime) -> Status:
    """status.champion (and lastGoodVersion) once the alias points at `target`."""
    part = Status(champion=Champion.model_validate({**version_summary(target),
                                                   "promotedAt": iso(now)}))
    if previous and previous != target.version:
        part = part.updated(last_good_version=previous)
    return part


async def move_champion(runtime: Runtime, model: SurgeModel, move: ChampionMove,
                        now: datetime) -> Status:
    """The one place the alias moves (a promotion, a shadow's win, a rollback, a revert):
    read the target from MLflow, point the alias at it, count and announce it; the status
    part that says so. An outage raises RegistryUnavailable with the alias unmoved."""
    mlflow = AsyncRegistry(runtime.registry)
    target = await mlflow.get_version(model.registered_model, move.version)
    await mlflow.set_alias(model.registered_model, target.version)
    metrics.PROMOTIONS.labels(move.reason).inc()
    await announce(runtime, model, target.version, move.previous)
    return champion_moved(target, move.previous, now)


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


async def sync_registry(runtime: Runtime, model: SurgeModel, status: Status,
                        annotations: dict[str, str], now: datetime) -> Step[Status]:
    """Judge the newest version and keep status.champion equal to the registry's alias."""
    name = model.registered_model
    mlflow = AsyncRegistry(runtime.registry)
    versions = await mlflow.versions(name)
    champion = await mlflow.get_alias(name)
    plan = plan_promotion(versions, champion, model.spec.promotion.to_policy(), now=now,
                          pinned=model.spec.serving.model_version,
                          judged=judged_from_status(status.challenger),
                          approved_version=annotations.get(APPROVE_ANNOTATION))
    step, move = promotion_step(model, status, plan, champion, now)
    if move is not None:
        try:
            moved = await move_champion(runtime, model, move, now)
        except RegistryUnavailable as error:  # the verdict stays in status, as it was reached
            kept = Status(challenger=step.part.challenger) if plan.judgement else Status()
            raise AliasNotMoved(error, kept) from error
        step = Step(step.part.merged(moved), step.decisions)
    return step
