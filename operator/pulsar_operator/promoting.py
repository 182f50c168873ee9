"""Registry step of a reconcile: read MLflow, plan the champion, move the alias, announce it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pulsar_core.events import MODEL_PROMOTED, ModelPromoted, SurgeModelRef
from pulsar_core.registry import VersionInfo
from pulsar_operator import metrics
from pulsar_operator.builders import SurgeModel
from pulsar_operator.conditions import now_iso
from pulsar_operator.promotion import plan_promotion, version_summary
from pulsar_operator.recorder import Decision
from pulsar_operator.runtime import Runtime
from pulsar_operator.triggers import APPROVE_ANNOTATION

log = logging.getLogger(__name__)


async def _call(runtime: Runtime, method: str, *args: Any) -> Any:
    """A registry call off the event loop; MLflow outages arrive as RegistryUnavailable."""
    return await asyncio.to_thread(getattr(runtime.registry, method), *args)


async def announce(runtime: Runtime, model: SurgeModel, version: str,
                   previous: str | None) -> None:
    """Publish ModelPromoted so predictors hot-swap; NATS trouble is logged, not fatal."""
    if runtime.publisher is None:
        return
    event = ModelPromoted(model_name=model.registered_model, version=version,
                          previous_version=previous,
                          surge_model=SurgeModelRef(namespace=model.namespace, name=model.name))
    try:
        await runtime.publisher.publish(MODEL_PROMOTED, event.model_dump_json().encode())
    except Exception as error:  # NATS down must not block promotion; the alias is the truth
        log.warning("could not publish %s for %s: %s", MODEL_PROMOTED, model.name, error)


async def move_champion(runtime: Runtime, model: SurgeModel, status: dict[str, Any],
                        target: VersionInfo, previous: str | None, reason: str) -> None:
    await _call(runtime, "set_alias", model.registered_model, target.version)
    if previous and previous != target.version:
        status["lastGoodVersion"] = previous
    status["champion"] = {**version_summary(target), "promotedAt": now_iso()}
    metrics.PROMOTIONS.labels(reason).inc()
    await announce(runtime, model, target.version, previous)


async def sync_registry(runtime: Runtime, model: SurgeModel, status: dict[str, Any],
                        annotations: dict[str, str], decisions: list[Decision]) -> None:
    """Judge the newest version and keep status.champion equal to the registry's alias."""
    name = model.registered_model
    versions: list[VersionInfo] = await _call(runtime, "versions", name)
    champion: VersionInfo | None = await _call(runtime, "get_alias", name)
    previous_challenger = status.get("challenger")
    plan = plan_promotion(model.spec, versions, champion, previous_challenger,
                          annotations.get(APPROVE_ANNOTATION))
    if plan.challenger is not None:
        status["challenger"] = plan.challenger
    if plan.target is not None:
        await move_champion(runtime, model, status, plan.target,
                            champion.version if champion else None, plan.event_reason or "")
    elif champion is not None:
        kept = status.get("champion") or {}
        status["champion"] = {**version_summary(champion),
                              "promotedAt": kept.get("promotedAt") or now_iso()}
    new_verdict = plan.challenger is not None and plan.challenger is not previous_challenger
    pinned_error = plan.event_reason == "PinnedVersionMissing" and (
        status.get("promotion") or {}).get("reason") != plan.reason
    if plan.event_reason and (plan.target is not None or new_verdict or pinned_error):
        decisions.append(Decision(plan.event_reason, plan.reason, plan.warning))
    status["promotion"] = {"reason": plan.reason, "eventReason": plan.event_reason,
                           "checkedAt": now_iso()}
