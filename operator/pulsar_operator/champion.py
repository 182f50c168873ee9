"""Registry step of a reconcile: read MLflow, plan the champion (pulsar_core.promotion), move
the alias, announce it, and show both versions in status."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pulsar_core.events import MODEL_PROMOTED, ModelPromoted, SurgeModelRef
from pulsar_core.gate import scores_from_tags
from pulsar_core.promotion import Judged, Judgement, plan_promotion
from pulsar_core.registry import VersionInfo
from pulsar_operator import metrics
from pulsar_operator.builders import SurgeModel
from pulsar_operator.conditions import iso, now_iso
from pulsar_operator.recorder import Decision
from pulsar_operator.runtime import Runtime
from pulsar_operator.shadow_plan import start_shadow, takes_shadow
from pulsar_operator.triggers import APPROVE_ANNOTATION

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


def judged_from_status(challenger: dict[str, Any] | None) -> Judged | None:
    """The verdict status.challenger recorded, if it names a version."""
    if not challenger or challenger.get("version") is None:
        return None
    return Judged(str(challenger["version"]), bool(challenger.get("passed")),
                  bool(challenger.get("awaitingApproval")), str(challenger.get("reason", "")))


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
    plan = plan_promotion(versions, champion, model.spec.promotion.to_policy(),
                          now=datetime.now(UTC),
                          pinned=model.spec.serving.model_version,
                          judged=judged_from_status(status.get("challenger")),
                          approved_version=annotations.get(APPROVE_ANNOTATION))
    if plan.judgement is not None:
        status["challenger"] = challenger_status(plan.judgement)
    if plan.target is not None and takes_shadow(model.spec, plan.event_reason, champion):
        assert champion is not None  # takes_shadow needs one to compare with
        started = start_shadow(status, plan.target, champion.version, datetime.now(UTC))
        if started is not None:
            decisions.append(started)
        plan = replace(plan, target=None, event_reason=None, warning=False,
                       reason=f"version {plan.target.version} passed the gate and shadows "
                       f"champion {champion.version} (spec.rollout.strategy shadow)")
    if plan.target is not None:
        await move_champion(runtime, model, status, plan.target,
                            champion.version if champion else None, plan.event_reason or "")
    elif champion is not None:
        kept = status.get("champion") or {}
        status["champion"] = {**version_summary(champion),
                              "promotedAt": kept.get("promotedAt") or now_iso()}
    new_verdict = plan.judgement is not None
    pinned_error = plan.event_reason == "PinnedVersionMissing" and (
        status.get("promotion") or {}).get("reason") != plan.reason
    if plan.event_reason and (plan.target is not None or new_verdict or pinned_error):
        decisions.append(Decision(plan.event_reason, plan.reason, plan.warning))
    status["promotion"] = {"reason": plan.reason, "eventReason": plan.event_reason,
                           "checkedAt": now_iso()}
