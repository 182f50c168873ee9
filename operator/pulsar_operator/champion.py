"""Registry step of a reconcile (read MLflow, plan the champion with pulsar_core.promotion)
and the one step that moves the alias and announces it. Which version serves is decided in
champion_machine.decide; this module reads and moves."""

from __future__ import annotations

import logging
from datetime import datetime

from pulsar_core.events import MODEL_PROMOTED, ModelPromoted, SurgeModelRef
from pulsar_core.promotion import Judged, plan_promotion
from pulsar_core.registry import RegistryUnavailable
from pulsar_operator import metrics
from pulsar_operator.champion_machine import (
    ChampionDecision,
    ChampionInputs,
    ChampionMove,
    RegistryRead,
    champion_moved,
    decide,
)
from pulsar_operator.domain import SurgeModel
from pulsar_operator.mlflow_client import AsyncRegistry
from pulsar_operator.names import APPROVE_ANNOTATION
from pulsar_operator.runtime import Runtime
from pulsar_operator.status import Challenger, Status, Step

log = logging.getLogger(__name__)


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
    decision = decide(ChampionInputs(model, status, RegistryRead(plan, champion), now))
    try:
        return await enact(runtime, model, decision, now)
    except RegistryUnavailable as error:  # the verdict stays in status, as it was reached
        kept = Status(challenger=decision.part.challenger) if plan.judgement else Status()
        raise AliasNotMoved(error, kept) from error


async def enact(runtime: Runtime, model: SurgeModel, decision: ChampionDecision,
                now: datetime) -> Step[Status]:
    """Carry out a champion decision: move the alias when it says so (move_champion, once),
    and the status part with the moved champion in it."""
    if decision.move is None:
        return Step(decision.part, decision.decisions)
    moved = await move_champion(runtime, model, decision.move, now)
    return Step(decision.part.merged(moved), decision.decisions)
