"""Serving step of a reconcile: roll the predictor to the champion, revert rollouts that fail."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from pulsar_operator.builders import (
    build_predictor_autoscaler,
    build_predictor_deployment,
    build_predictor_pdb,
    build_predictor_service,
    predictor_endpoint,
    predictor_name,
    short_hash,
)
from pulsar_operator.children import drift
from pulsar_operator.clock import iso
from pulsar_operator.domain import SurgeModel
from pulsar_operator.kube import (
    AUTOSCALERS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    SERVICES,
    Kube,
    Ref,
)
from pulsar_operator.recorder import Decision
from pulsar_operator.status import Predictor, Status, Step

REFS: dict[str, Ref] = {"Deployment": DEPLOYMENTS, "Service": SERVICES,
                        "PodDisruptionBudget": DISRUPTION_BUDGETS,
                        "HorizontalPodAutoscaler": AUTOSCALERS}


def deployment_health(deployment: dict[str, Any] | None, replicas: int) -> tuple[int, bool, bool]:
    """(ready replicas, available, progress deadline exceeded) from a Deployment's status."""
    status = (deployment or {}).get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    meta = (deployment or {}).get("metadata") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return 0, False, False  # the status still describes the previous template
    exceeded = any(c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
                   for c in status.get("conditions") or [])
    updated = int(status.get("updatedReplicas") or 0)
    return ready, ready >= replicas and updated >= replicas, exceeded


def wanted_replicas(model: SurgeModel, deployment: dict[str, Any] | None) -> int:
    """The predictor's replica count: spec.serving.replicas, or what the autoscaler set."""
    scaling = model.spec.serving.autoscaling
    if scaling is None:
        return model.spec.serving.replicas
    scaled = ((deployment or {}).get("spec") or {}).get("replicas")
    return max(int(scaled), scaling.min_replicas) if scaled is not None else scaling.min_replicas


class Served(NamedTuple):
    """A look at the champion's predictor: its status part and how its Deployment stands."""

    step: Step[Status]
    available: bool
    exceeded: bool  # Kubernetes gave up on the rollout (ProgressDeadlineExceeded)
    applied: bool = True  # False: no champion, no predictor


async def sync_predictor(kube: Kube, model: SurgeModel, status: Status, now: datetime,
                         watched: dict[tuple[str, str, str], dict[str, Any]]
                         ) -> Served:
    """Apply the predictor for status.champion: status.predictor, its Events and how the
    Deployment stands (champion_machine judges a late rollout)."""
    version = status.champion.version if status.champion is not None else None
    if not version:
        return Served(Step(Status()), available=False, exceeded=False, applied=False)
    deployment = build_predictor_deployment(model, version)
    applied = short_hash(json.dumps(deployment, sort_keys=True), 16)
    previous = status.predictor or Predictor()
    changed = previous.applied_hash != applied
    decisions = await _apply_children(kube, model, deployment, changed, watched)
    predictor = previous
    if changed:
        predictor, rolled = applied_predictor(model, previous, version, applied, now)
        decisions.extend([rolled] if rolled is not None else [])
    live = watched.get(("Deployment", model.namespace, predictor_name(model)))
    if live is None or predictor.applied_hash != previous.applied_hash:
        live = await kube.get(DEPLOYMENTS, model.namespace, predictor_name(model))
    replicas = wanted_replicas(model, live)
    ready, available, exceeded = deployment_health(live, replicas)
    predictor = predictor.updated(ready_replicas=ready, replicas=replicas, available=available)
    return Served(Step(Status(predictor=predictor), tuple(decisions)), available, exceeded)


async def _apply_children(kube: Kube, model: SurgeModel, deployment: dict[str, Any],
                          changed: bool, watched: dict[tuple[str, str, str], dict[str, Any]]
                          ) -> list[Decision]:
    """Apply the predictor's children when the template changed, else repair what drifted;
    delete the optional ones the spec no longer asks for. The repairs' Events."""
    wanted = [deployment, build_predictor_service(model)]
    optional = (("PodDisruptionBudget", model.spec.serving.fewest_replicas >= 2,
                 build_predictor_pdb),
                ("HorizontalPodAutoscaler", model.spec.serving.autoscaling is not None,
                 build_predictor_autoscaler))
    for kind, needed, build in optional:
        if needed:
            wanted.append(build(model))
        elif (kind, model.namespace, predictor_name(model)) in watched:
            await kube.delete(REFS[kind], model.namespace, predictor_name(model))
    repaired = []
    for manifest in wanted:
        repair = None if changed else await _repair_reason(kube, manifest, watched)
        if changed or repair:
            await kube.apply(REFS[manifest["kind"]], manifest)
        if repair:
            repaired.append(Decision("PredictorRepaired", repair, True))
    return repaired


def applied_predictor(model: SurgeModel, previous: Predictor, version: str, applied: str,
                      now: datetime) -> tuple[Predictor, Decision | None]:
    """status.predictor once a new template is applied; the Event when the version changes."""
    rolled = previous.version != version
    predictor = Predictor(deployment=predictor_name(model), version=version,
                          applied_hash=applied, endpoint=predictor_endpoint(model),
                          rollout_started_at=iso(now) if rolled
                          else previous.rollout_started_at or iso(now),
                          rolled_out_at=None if rolled else previous.rolled_out_at)
    if not rolled:
        return predictor, None
    return predictor, Decision("PredictorRollout", f"predictor {predictor_name(model)} rolls to "
                               f"version {version}")


async def _repair_reason(kube: Kube, manifest: dict[str, Any],
                         watched: dict[tuple[str, str, str], dict[str, Any]]) -> str | None:
    """Why an applied child must be applied again (deleted, or edited in fields we own)."""
    meta = manifest["metadata"]
    kind, name = manifest["kind"], meta["name"]
    live = watched.get((kind, meta["namespace"], name))
    if live is None:  # not in the watch cache yet (restart) or really gone: ask once
        live = await kube.get(REFS[kind], meta["namespace"], name)
        if live is None:
            return f"{kind} {name} was missing; recreated"
        watched[(kind, meta["namespace"], name)] = live
    fields = drift(live, manifest)
    if fields:
        shown = ", ".join(fields[:5]) + (f" and {len(fields) - 5} more" if len(fields) > 5 else "")
        return f"{kind} {name} differed from the SurgeModel in {shown}; restored"
    return None

