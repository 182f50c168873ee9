"""Prometheus metrics of one predictor (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric the predictor exports, created once per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "pulsar_request_duration_seconds", "HTTP request latency.", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter(
            "pulsar_requests_total", "HTTP requests by endpoint and outcome (status code).",
            ["endpoint", "status"], registry=r)
        self.predict_latency = Histogram(
            "pulsar_predict_duration_seconds", "Model predict() time per request.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.forecasts = Counter(
            "pulsar_forecasts_total", "Forecasts answered, by model that answered.", ["model"],
            registry=r)
        self.low_confidence = Counter(
            "pulsar_low_confidence_total", "Forecasts below the confidence threshold.",
            registry=r)
        self.fallbacks = Counter(
            "pulsar_fallbacks_total", "Requests answered without the CNN, by reason.", ["reason"],
            registry=r)
        self.outside_range = Counter(
            "pulsar_outside_training_range_total",
            "Series forecast without their calendar inputs (time of day), which lay outside "
            "the range the model was trained on.", registry=r)
        self.breaker_state = Gauge(
            "pulsar_cnn_breaker_state", "CNN circuit breaker: 0 closed, 1 open, 2 half-open.",
            registry=r)
        self.model_info = Gauge(
            "pulsar_model_info", "The served model version (value 1).",
            ["model", "version", "run_id"], registry=r)
        self.model_loads = Counter(
            "pulsar_model_loads_total", "Model loads by outcome (ok / failed).", ["outcome"],
            registry=r)
        self.model_load_failed = Gauge(
            "pulsar_model_last_load_failed", "1 when the latest load attempt failed.", registry=r)
        self.promotion_events = Counter(
            "pulsar_promotion_events_total", "Promotion events (MODEL_PROMOTED) of this model "
            "by outcome: confirmed / unconfirmed by the registry, repeated (judged within the "
            "alias-poll period), served, pinned, malformed, lookup_failed.", ["outcome"],
            registry=r)
        self.promotion_lookups = Counter(
            "pulsar_promotion_lookups_total", "Registry reads caused by promotion events (at most "
            "one per version per alias-poll period; concurrent events share one).", registry=r)
        self.live_series = Gauge(
            "pulsar_live_series", "Series (hexagon x service) in the live buffer.", registry=r)
        self.live_rows = Gauge("pulsar_live_rows", "Rows in the live buffer.", registry=r)
        self.live_lag = Gauge(
            "pulsar_live_lag_seconds", "Now minus the newest period_end in the live buffer.",
            registry=r)
        self.live_age = Gauge(
            "pulsar_live_age_seconds", "Seconds since the last live message was stored.",
            registry=r)
        self.live_messages = Counter(
            "pulsar_live_messages_total",
            "Live messages by outcome (ok / bad / replayed: warm start).", ["outcome"],
            registry=r)
        self.live_rows_in = Counter(
            "pulsar_live_ingested_rows_total", "Live rows by outcome (stored / rejected).",
            ["outcome"], registry=r)
        self.live_rejected = Counter(
            "pulsar_live_rejected_rows_total", "Live rows rejected by validation or admission, "
            "by reason (e.g. in_future:period_start, bad_type:demand_signal, outside_city, "
            "new_series_budget, memory_budget).", ["reason"], registry=r)
        self.live_refresh_failures = Counter(
            "pulsar_live_refresh_failures_total", "Background live forecast refreshes that "
            "failed (each is retried).", registry=r)
        self.live_evicted = Gauge(
            "pulsar_live_evicted_series", "Series evicted from the full live buffer.", registry=r)
        self.live_new_series = Gauge(
            "pulsar_live_new_series", "Live series the model was not trained on (budgeted by "
            "PULSAR_LIVE_MAX_NEW_SERIES).", registry=r)
        self.live_buffer_bytes = Gauge(
            "pulsar_live_buffer_bytes", "Estimated memory the live buffer holds.", registry=r)
        self.live_buffer_budget = Gauge(
            "pulsar_live_buffer_budget_bytes", "The live buffer's memory budget "
            "(PULSAR_LIVE_BUFFER_MAX_MB).", registry=r)
        self.nats_connected = Gauge(
            "pulsar_nats_connected", "1 while connected to NATS.", registry=r)
        self.drift_live_mae = Gauge(
            "pulsar_drift_live_mae", "Rolling MAE of scored live forecasts, per horizon.",
            ["horizon"], registry=r)
        self.drift_ratio = Gauge(
            "pulsar_drift_ratio", "Rolling live MAE / the model's evaluation MAE, per horizon.",
            ["horizon"], registry=r)
        self.drift_forecasts = Counter(
            "pulsar_drift_forecasts_total", "Live forecasts by fate (scored / expired without "
            "an actual / dropped over the pending cap).", ["outcome"], registry=r)
        self.drift_pending = Gauge(
            "pulsar_drift_pending", "Live forecasts waiting for their actual.", registry=r)
        self.drift_alarms = Counter(
            "pulsar_drift_alarms_total", "Drift alarms by outcome (published / failed / no_nats).",
            ["outcome"], registry=r)
        self.score_events = Counter(
            "pulsar_score_events_total", "Score events for the live rollout by outcome "
            "(published / retried / dropped over the outbox cap).", ["outcome"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
