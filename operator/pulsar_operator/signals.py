"""Signals step of a reconcile: the signal bridge Deployment, one per city and service scope.

A bridge feeds `pulsar.signals.<city>.<serviceType>`, which every predictor of that scope reads,
so two pollers of one scope would publish every period twice. The oldest SurgeModel that asks
for a bridge owns the scope (the rule of MLflow names and retrain subjects, runtime.Catalog)
and runs it; the others name it in status.signals.fedBy and run none.
"""

from __future__ import annotations

import json
from typing import Any

from pulsar_operator.builders import bridge_name, build_bridge_deployment, short_hash
from pulsar_operator.children import holds
from pulsar_operator.domain import SurgeModel
from pulsar_operator.kube import DEPLOYMENTS, Kube, KubeError
from pulsar_operator.recorder import Decision
from pulsar_operator.runtime import Key
from pulsar_operator.status import Signals, Status, Step

Watched = dict[tuple[str, str, str], dict[str, Any]]


async def sync_signals(kube: Kube, model: SurgeModel, previous: Signals | None,
                       owner: Key | None, watched: Watched) -> Step[Status]:
    """status.signals after applying, repairing or deleting this model's bridge Deployment."""
    signals = model.spec.signals
    if not signals.needs_bridge:
        await _remove(kube, model, previous, watched)
        return Step(Status(signals=None) if previous is not None else Status())
    own = (model.namespace, model.name)
    base = Signals(source=signals.source, subject=model.spec.signals_subject)
    if owner is not None and owner != own:
        await _remove(kube, model, previous, watched)
        return _fed_by(model, base, previous, owner)
    if model.platform.nats_url is None:
        await _remove(kube, model, previous, watched)
        message = ("no NATS to publish to: the operator has no NATS URL (chart value nats.url); "
                   "the bridge starts once it has one")
        news = previous is None or previous.message != message
        return Step(Status(signals=base.updated(message=message)),
                    (Decision("BridgeNotStarted", message, True),) if news else ())
    return await _run(kube, model, base, previous, watched)


def _fed_by(model: SurgeModel, base: Signals, previous: Signals | None,
            owner: Key) -> Step[Status]:
    """A follower: the owner's bridge feeds this model's subject; an Event when that is news."""
    fed_by = f"{owner[0]}/{owner[1]}"
    message = (f"{base.subject} is fed by the bridge of SurgeModel {fed_by}, the oldest model "
               "of this city and service type; no second bridge runs")
    news = previous is None or previous.fed_by != fed_by
    return Step(Status(signals=base.updated(fed_by=fed_by, message=message)),
                (Decision("BridgeShared", message),) if news else ())


async def _run(kube: Kube, model: SurgeModel, base: Signals, previous: Signals | None,
               watched: Watched) -> Step[Status]:
    """The owner: apply the bridge when its template changed, else restore what drifted."""
    manifest = build_bridge_deployment(model)
    name = bridge_name(model)
    applied = short_hash(json.dumps(manifest, sort_keys=True), 16)
    live = watched.get(("Deployment", model.namespace, name))
    if live is None:
        live = await kube.get(DEPLOYMENTS, model.namespace, name)
    decisions: list[Decision] = []
    if previous is None or previous.applied_hash != applied or previous.deployment != name:
        await kube.apply(DEPLOYMENTS, manifest)
        what = "polls" if model.spec.signals.source == "bridge" else "relays"
        decisions.append(Decision("BridgeStarted", f"signal bridge {name} {what} into "
                                  f"{base.subject}"))
    elif live is None or not holds(live, manifest):
        await kube.apply(DEPLOYMENTS, manifest)
        why = "was missing; recreated" if live is None else \
            "differed from the SurgeModel in fields the operator owns; restored"
        decisions.append(Decision("BridgeRepaired", f"Deployment {name} {why}", True))
    ready = int(((live or {}).get("status") or {}).get("readyReplicas") or 0) >= 1
    return Step(Status(signals=base.updated(deployment=name, applied_hash=applied,
                                            ready=ready)), tuple(decisions))


async def _remove(kube: Kube, model: SurgeModel, previous: Signals | None,
                  watched: Watched) -> None:
    """Stop this model's bridge when the spec no longer asks for it (or another model of the
    scope owns it): scaled to zero, so no second poller runs; the owned Deployment stays until
    the model goes (like a retired challenger), so the operator needs no delete permission on
    Deployments (operator/pulsar_operator/rbac.py)."""
    name = bridge_name(model)
    live = watched.get(("Deployment", model.namespace, name))
    if live is not None:
        if (live.get("spec") or {}).get("replicas") == 0:
            return
    elif previous is None or not previous.deployment:
        return
    try:
        await kube.patch(DEPLOYMENTS, model.namespace, name, {"spec": {"replicas": 0}})
    except KubeError as error:
        if error.status != 404:
            raise
