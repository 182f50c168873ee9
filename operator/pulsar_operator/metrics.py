"""Prometheus metrics of the operator (one registry per process; tests read it directly)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pulsar_core import dead_letters

REGISTRY = CollectorRegistry()
RECONCILES = Counter("pulsar_operator_reconciles", "Reconciles by source.", ["source"],
                     registry=REGISTRY)
ERRORS = Counter("pulsar_operator_errors", "Reconcile errors by kind.", ["kind"],
                 registry=REGISTRY)
TRIGGERS = Counter("pulsar_operator_triggers", "Training runs started by trigger kind.", ["kind"],
                   registry=REGISTRY)
COALESCED = Counter("pulsar_operator_coalesced", "Retrain requests coalesced into a run.",
                    registry=REGISTRY)
PROMOTIONS = Counter("pulsar_operator_promotions", "Champion moves by reason.", ["reason"],
                     registry=REGISTRY)
ROLLOUT_VERDICTS = Counter("pulsar_operator_rollout_verdicts", "Shadow challengers decided "
                           "on live evidence, by verdict (promote / retire).", ["verdict"],
                           registry=REGISTRY)
ROLLBACKS = Counter("pulsar_operator_rollbacks", "Champions rolled back on live regression.",
                    registry=REGISTRY)
LIVE_MAE = Gauge("pulsar_operator_live_mae", "Live MAE per model, role (champion / challenger) "
                 "and horizon, from the paired score stream.",
                 ["namespace", "name", "role", "horizon"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("pulsar_operator_queue_depth", "Models waiting for a reconcile.",
                    registry=REGISTRY)
QUEUE_LAG = Histogram("pulsar_operator_queue_lag_seconds", "Enqueue-to-start delay.",
                      registry=REGISTRY)
DURATION = Histogram("pulsar_operator_reconcile_seconds", "Reconcile duration.",
                     registry=REGISTRY)
RETRAIN_MESSAGES = Counter("pulsar_operator_retrain_messages", "Retrain messages by outcome.",
                           ["outcome"], registry=REGISTRY)
NATS_UP = Gauge("pulsar_operator_nats_up", "1 while NATS and the retrain consumer are up.",
                registry=REGISTRY)
LEADER = Gauge("pulsar_operator_leader", "1 while this replica holds the leader Lease and acts.",
               registry=REGISTRY)
SCORE_EVENTS = Counter("pulsar_operator_score_events", "Score events read from PULSAR_SCORES "
                       "by outcome: folded, invalid, oversized (more than MAX_EVENT_KEYS "
                       "forecasts), evicted (oldest periods dropped over the cache's bound).",
                       ["outcome"], registry=REGISTRY)
SCORE_ERRORS_REFUSED = Counter("pulsar_operator_score_errors_refused", "Scored forecasts "
                               "refused from score events, by reason (non_finite: NaN or "
                               "infinite error).", ["reason"], registry=REGISTRY)
TASKS = Gauge("pulsar_operator_asyncio_tasks", "Asyncio tasks alive in the operator's loop "
              "(flat in the number of SurgeModels: there is no task per object).",
              registry=REGISTRY)

dead_letters.register_metrics(REGISTRY)  # pulsar_dead_letters_total{source,outcome}

# status.phase values (reconciler.finish and _refuse) and status.lastTraining.outcome values.
PHASES = ("Pending", "Training", "Serving", "Degraded", "Paused", "Failed")
TRAINING_OUTCOMES = ("Running", "Succeeded", "Failed")
MODELS = Gauge("pulsar_operator_models", "SurgeModels by namespace and status.phase, as this "
               "replica last wrote them (every phase of a namespace that has models, 0 "
               "included); the acting replica's (pulsar_operator_leader 1) are current.",
               ["namespace", "phase"], registry=REGISTRY)
LAST_TRAINING = Gauge("pulsar_operator_last_training", "SurgeModels by namespace and the outcome "
                      "of their last training Job (Running, Succeeded, Failed; never trained: "
                      "not counted), as this replica last wrote them.",
                      ["namespace", "outcome"], registry=REGISTRY)
TRAINING_DURATION = Histogram(
    "pulsar_operator_training_duration_seconds", "Training Jobs by outcome (succeeded / "
    "failed): from lastTraining.startedAt to the end the operator saw; observed once per "
    "Job, when the status that ends it is written.", ["outcome"], registry=REGISTRY,
    buckets=(60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 14400, 28800))
for _outcome in ("succeeded", "failed"):  # exported at 0, so the first one is an increase
    TRAINING_DURATION.labels(_outcome)

Key = tuple[str, str]
_models: dict[Key, tuple[str | None, str | None]] = {}  # key -> (phase, last training outcome)
_per_namespace: dict[str, int] = {}
_timed: dict[Key, str] = {}  # key -> the last Job whose duration was observed


def observe_status(key: Key, before: Mapping[str, Any] | None,
                   after: Mapping[str, Any]) -> None:
    """Count a model's status as written (phase, last training outcome) and observe the
    duration of a training Job when this write ends it. A Job is observed once: `before`
    already holding its end (a restarted operator reads status from the API) or the Job
    already timed here (a patch retried) observes nothing."""
    training: Mapping[str, Any] = after.get("lastTraining") or {}
    _count(key, after.get("phase"), training.get("outcome"))
    job, outcome = training.get("job"), training.get("outcome")
    previous: Mapping[str, Any] = (before or {}).get("lastTraining") or {}
    if outcome not in ("Succeeded", "Failed") or not job or _timed.get(key) == job \
            or (previous.get("job"), previous.get("outcome")) == (job, outcome):
        return
    _timed[key] = str(job)
    started, ended = _time(training.get("startedAt")), _time(training.get("completedAt"))
    if started is not None and ended is not None:
        TRAINING_DURATION.labels(str(outcome).lower()).observe(
            max(0.0, (ended - started).total_seconds()))


def forget(key: Key) -> None:
    """A deleted model leaves the gauges (its namespace's series too, once it has none)."""
    _timed.pop(key, None)
    if key in _models:
        phase, outcome = _models.pop(key)
        _add(key[0], phase, outcome, -1)


def _count(key: Key, phase: str | None, outcome: str | None) -> None:
    old = _models.get(key)
    if old == (phase, outcome):
        return
    if old is not None:
        _add(key[0], *old, -1)
    _models[key] = (phase, outcome)
    _add(key[0], phase, outcome, 1)


def _add(namespace: str, phase: str | None, outcome: str | None, amount: int) -> None:
    count = _per_namespace.get(namespace, 0)
    if count == 0 and amount > 0:
        for known in PHASES:
            MODELS.labels(namespace, known).set(0)
        for known in TRAINING_OUTCOMES:
            LAST_TRAINING.labels(namespace, known).set(0)
    if phase:
        MODELS.labels(namespace, phase).inc(amount)
    if outcome:
        LAST_TRAINING.labels(namespace, outcome).inc(amount)
    _per_namespace[namespace] = count + amount
    if _per_namespace[namespace] <= 0:
        del _per_namespace[namespace]
        for gauge, label in ((MODELS, "phase"), (LAST_TRAINING, "outcome")):
            for value in {sample.labels[label] for family in gauge.collect()
                          for sample in family.samples
                          if sample.labels["namespace"] == namespace}:
                gauge.remove(namespace, value)


def _time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def count_tasks_of(loop: asyncio.AbstractEventLoop) -> None:
    """Report `loop`'s live tasks when scraped (read from the metrics server's thread)."""
    TASKS.set_function(lambda: float(len(asyncio.all_tasks(loop))))


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
