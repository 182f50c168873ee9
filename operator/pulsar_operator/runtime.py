"""Process-wide state: clients, the watch-fed catalog of SurgeModels, and the work queue."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pulsar_core.events import model_retrain_subject, signals_subject
from pulsar_core.registry import VersionRegistry
from pulsar_core.settings import registered_model_name
from pulsar_operator import metrics
from pulsar_operator.config import OperatorSettings
from pulsar_operator.domain import Platform
from pulsar_operator.kube import Kube
from pulsar_operator.leader import LeaderElection
from pulsar_operator.score_book import ScoreBook
from pulsar_operator.spec import SurgeModelSpec
from pulsar_operator.workqueue import WorkQueue

Key = tuple[str, str]  # (namespace, name)


class Publisher(Protocol):
    async def publish(self, subject: str, payload: bytes) -> None: ...


def slim(body: dict[str, Any], keep_spec: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A watched object without what the operator never reads (managedFields is often most of
    it); with `keep_spec`, only those spec fields. Keeps 1,000 models' caches small."""
    meta = {key: value for key, value in (body.get("metadata") or {}).items()
            if key != "managedFields"}
    spec = body.get("spec") or {}
    if keep_spec is not None:
        spec = {key: spec[key] for key in keep_spec if key in spec}
    return {**body, "metadata": meta, "spec": spec}


class Catalog:
    """The latest body of every SurgeModel, kept by kopf's watch events (no extra API lists),
    indexed by the names a model must own alone: its MLflow model, its retrain subject and,
    when it asks for a signal bridge, the signals subject the bridge feeds."""

    def __init__(self) -> None:
        self.bodies: dict[Key, dict[str, Any]] = {}
        self._names: dict[Key, tuple[str, str]] = {}
        self._by_name: dict[str, set[Key]] = defaultdict(set)
        self._by_subject: dict[str, set[Key]] = defaultdict(set)
        self._bridged: dict[Key, str] = {}
        self._by_bridged: dict[str, set[Key]] = defaultdict(set)
        # models whose spec does not parse or breaks the policy: they own nothing, so a broken
        # model never blocks a good one that shares its names
        self._unusable: set[Key] = set()

    def put(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        key = (meta["namespace"], meta["name"])
        self.drop(key)
        self.bodies[key] = slim(body)
        spec = body.get("spec") or {}
        city, service = str(spec.get("city")), str(spec.get("serviceType"))
        name = str(spec.get("registeredModel") or registered_model_name(city, service))
        subject = str(spec.get("retrainSubject") or model_retrain_subject(name, city, service))
        self._names[key] = (name, subject)
        self._by_name[name].add(key)
        self._by_subject[subject].add(key)
        if (spec.get("signals") or {}).get("source", "external") != "external":
            self._bridged[key] = signals_subject(city, service)
            self._by_bridged[self._bridged[key]].add(key)

    def drop(self, key: Key) -> None:
        self._unusable.discard(key)
        self.bodies.pop(key, None)
        name, subject = self._names.pop(key, ("", ""))
        self._by_name.get(name, set()).discard(key)
        self._by_subject.get(subject, set()).discard(key)
        self._by_bridged.get(self._bridged.pop(key, ""), set()).discard(key)

    def set_usable(self, key: Key, usable: bool) -> list[Key]:
        """Record whether `key`'s spec is usable; on a change, the other models sharing one of
        its names (to be reconciled again: their owner may have changed)."""
        if usable == (key not in self._unusable):
            return []
        (self._unusable.discard if usable else self._unusable.add)(key)
        name, subject = self._names.get(key, ("", ""))
        peers = (self._by_name.get(name, set()) | self._by_subject.get(subject, set())
                 | self._by_bridged.get(self._bridged.get(key, ""), set()))
        return sorted(peers - {key})

    def bridge_peers(self, key: Key) -> list[Key]:
        """Every model asking for a bridge of the same signals subject as `key` (itself too)."""
        return sorted(self._by_bridged.get(self._bridged.get(key, ""), ()))

    def bridge_owner(self, subject: str) -> Key | None:
        """The one SurgeModel whose bridge feeds a signals subject: the oldest one asking."""
        return self._oldest(sorted(self._by_bridged.get(subject, ())))

    def registered_name(self, key: Key) -> str:
        return self._names[key][0]

    def retrain_subject(self, key: Key) -> str:
        return self._names[key][1]

    def by_registered_model(self, registered: str) -> list[Key]:
        return sorted(self._by_name.get(registered, ()))

    def by_retrain_subject(self, subject: str) -> list[Key]:
        return sorted(self._by_subject.get(subject, ()))

    def registry_owner(self, registered: str) -> Key | None:
        """The SurgeModel that owns an MLflow model name: the oldest one using it."""
        return self._oldest(self.by_registered_model(registered))

    def subject_owner(self, subject: str) -> Key | None:
        """The one SurgeModel a retrain subject's messages retrain: the oldest one using it."""
        return self._oldest(self.by_retrain_subject(subject))

    def _oldest(self, keys: list[Key]) -> Key | None:
        keys = [key for key in keys if key not in self._unusable]
        if not keys:
            return None
        return min(keys, key=lambda key: (str((self.bodies[key].get("metadata") or {})
                                               .get("creationTimestamp") or ""), key))


@dataclass
class Runtime:
    """Everything handlers need; lives in kopf's memo for the operator's lifetime."""

    settings: OperatorSettings
    kube: Kube
    registry: VersionRegistry
    platform: Platform
    publisher: Publisher | None = None
    score_book: ScoreBook | None = None  # PULSAR_SCORES reader while NATS is connected
    nats_error: str | None = None  # set while NATS is unreachable (see nats_link)
    catalog: Catalog = field(default_factory=Catalog)
    # every reconcile goes through it; every timed wish of every model is in it
    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    statuses: dict[Key, dict[str, Any]] = field(default_factory=dict)
    specs: dict[Key, tuple[dict[str, Any], SurgeModelSpec]] = field(default_factory=dict)
    start_checks: dict[str, datetime] = field(default_factory=dict)  # training.start_check_due
    # what a model's last registry read depended on (timing.inputs_of): a change reads again
    registry_inputs: dict[Key, str] = field(default_factory=dict)
    # the newest version MLflow announced per registered model (model.registered events)
    announced: dict[str, int] = field(default_factory=dict)
    rollout_next: dict[Key, datetime] = field(default_factory=dict)  # live rollout re-checks
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # the leader's loops (workers, NATS): empty while this replica stands by
    acting: list[asyncio.Task[None]] = field(default_factory=list)
    election: LeaderElection | None = None
    # latest Job/Deployment bodies from kopf's watch streams: (kind, namespace, name) -> body
    children: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.catalog.drop(key)
        self.queue.remove(key)
        for memory in (self.statuses, self.specs, self.registry_inputs, self.rollout_next):
            memory.pop(key, None)
        metrics.forget(key)  # a deleted model leaves the phase gauges
