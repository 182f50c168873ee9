"""Prometheus metrics of the operator (one registry per process; tests read it directly)."""

from __future__ import annotations

import asyncio

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


def count_tasks_of(loop: asyncio.AbstractEventLoop) -> None:
    """Report `loop`'s live tasks when scraped (read from the metrics server's thread)."""
    TASKS.set_function(lambda: float(len(asyncio.all_tasks(loop))))


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
