"""Environment contracts shared by the operator (which writes them) and the images (which read).

One pydantic-settings class per image; `to_env()` renders the exact variables the operator puts
into a Job or Deployment, so the two sides cannot drift apart.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulsar_core.contract import MAX_ID, PERIOD_MINUTES
from pulsar_core.fallback import Fallback
from pulsar_core.gate import PromotionPolicy
from pulsar_core.models.config import CNNConfig, ElasticNetConfig

DataFormat = Literal["auto", "kandoo-csv", "snapshot-parquet"]
CLICKHOUSE_DATABASE = "snapp_raw_log"
CLICKHOUSE_TABLE = "kandoo_parameter_nats"
# Settings that hold a credential: read from the environment (a Secret) only, never a flag,
# never rendered by to_env() (the operator passes them as secretKeyRef).
SECRET_FIELDS = frozenset({"clickhouse_user", "clickhouse_password", "nats_password",
                           "auth_token"})
MAX_HORIZON_MINUTES = 1440.0
_ELASTICNET, _CNN = ElasticNetConfig(), CNNConfig()  # the hyper-parameters' owners
# One token of a NATS subject: no wildcard (* >), no separator (.), no whitespace.
_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def subject_token_problem(value: str) -> str | None:
    """Why `value` cannot be one token of a NATS subject (None when it can): `*` or `>` would
    subscribe to other scopes' subjects, a dot or a space makes another subject."""
    if _SUBJECT_TOKEN.fullmatch(value):
        return None
    return (f"{value[:40]!r} cannot be a NATS subject token (a wildcard '*' or '>', a dot, "
            "whitespace or an empty slug would subscribe to or publish on another scope's "
            "subject); use 1-128 ASCII letters, digits, '-' or '_', e.g. 'tehran'")


def horizon_problem(minutes: float) -> str | None:
    """Why `minutes` cannot be a forecast horizon (None when it can): a multiple of the
    7.5-minute period, at most a day ahead (the CRD's bounds on spec.training.horizonsMinutes)."""
    if not PERIOD_MINUTES <= minutes <= MAX_HORIZON_MINUTES or \
            minutes / PERIOD_MINUTES != int(minutes / PERIOD_MINUTES):
        return (f"{minutes:g} is not a positive multiple of {PERIOD_MINUTES:g} minutes in "
                f"[{PERIOD_MINUTES:g}, {MAX_HORIZON_MINUTES:g}]")
    return None


def registered_model_name(city: str, service: str) -> str:
    """`pulsar-<city>-<service>`, lower-case and DNS-safe, as registered in MLflow."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{city}-{service}".lower()).strip("-")
    return f"pulsar-{slug}"


class _EnvContract(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSAR_", extra="ignore")

    def to_env(self) -> dict[str, str]:
        """The `PULSAR_*` variables that reproduce this object (lists/dicts as JSON), less the
        credentials (SECRET_FIELDS): those reach a pod as secretKeyRef, never as a value."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None or name in SECRET_FIELDS:
                continue
            key = f"PULSAR_{name.upper()}"
            env[key] = json.dumps(value) if isinstance(value, list | dict) else str(value)
        return env


class TrainSettings(_EnvContract):
    """What a trainer Job needs; `pulsar train` flags map onto the same fields."""

    mlflow_tracking_uri: str = Field("sqlite:///.pulsar/mlflow.db", description="MLflow URI.")
    nats_url: str | None = Field(None, description="Publish model.registered here when set.")
    model_namespace: str = Field("default", description="Namespace of the SurgeModel.")
    model_name: str = Field("local", description="Name of the SurgeModel resource.")
    registered_model_name: str | None = Field(
        None, description="MLflow registered model; default pulsar-<city>-<service_type>.")
    city: str = Field("tehran", description="City slug, part of the registered model name.")
    city_id: int | None = Field(
        None, ge=0, le=MAX_ID, description="Keep only rows of this city id.")
    service_type: str = Field("all", description="Service slug, part of the model name.")
    service_type_id: int | None = Field(
        None, ge=0, le=MAX_ID, description="Keep only this service type id.")
    data_uri: list[str] = Field(
        default_factory=list, description="Files, directories, globs or pyarrow URIs (s3://)."
    )
    data_format: DataFormat = Field("auto", description="kandoo-csv | snapshot-parquet | auto.")
    clickhouse_url: str | None = Field(
        None, description="Read raw kandoo records from this ClickHouse HTTP endpoint "
        "(http[s]://host:8123) instead of --data; needs --city-id.")
    clickhouse_database: str = Field(CLICKHOUSE_DATABASE, description="ClickHouse database.")
    clickhouse_table: str = Field(CLICKHOUSE_TABLE, description="Table of raw kandoo records.")
    clickhouse_user: str | None = Field(
        None, description="ClickHouse user (from a Secret; unset: the server's default user).")
    clickhouse_password: SecretStr | None = Field(
        None, description="ClickHouse password: environment only (a Secret), never a flag.")
    data_max_future_minutes: float = Field(
        15.0, ge=0, description="Rows dated further ahead of now are rejected (in_future:...); "
        "rows before 2000-01-01 always are (too_early:...).")
    lookback_days: float | None = Field(None, description="Use only the last N days of data.")
    holdout_days: float = Field(
        1.0, description="Test block of each backtest fold, in calendar days of the city's time "
        "zone (the block before it validates); a fraction splits by trailing hours instead.")
    timezone: str | None = Field(
        None, description="IANA time zone of day boundaries; default from the city.")
    input_timezone: str | None = Field(
        None, description="Zone of input timestamps written without one: UTC, city (the "
        "city's zone, see timezone) or an IANA zone. Unset: a kandoo export's are UTC (its "
        "convention), a snapshot file's rows are rejected (naive_time:<column>).")
    backtest_folds: int | None = Field(
        None, ge=1, description="At most this many rolling-origin folds (newest); all if unset.")
    horizons_minutes: list[float] = Field(default_factory=lambda: [30.0, 60.0, 90.0])
    window: int = Field(12, ge=2, le=96, description="Periods of 7.5 minutes the CNN sees.")
    elasticnet_alpha: float = Field(_ELASTICNET.alpha, gt=0)
    elasticnet_l1_ratio: float = Field(_ELASTICNET.l1_ratio, ge=0, le=1)
    cnn_channels: int = Field(_CNN.channels, ge=4, le=512)
    cnn_epochs: int = Field(_CNN.epochs, ge=1, le=1000)
    cnn_learning_rate: float = Field(_CNN.learning_rate, gt=0, le=1)
    cnn_patience: int = Field(_CNN.patience, ge=1, le=100)
    cnn_batch_size: int = Field(_CNN.batch_size, ge=16)
    cnn_seeds: int = Field(3, ge=1, le=16, description="CNN seed-ensemble members.")
    cnn_max_train_rows: int = Field(
        _CNN.max_train_rows, ge=1000, description="Training rows per fold for the whole CNN "
        "ensemble, split between its members (each draws its own seeded sample).")
    seed: int = _CNN.seed
    promotion_policy: Literal["auto", "manual"] = Field(
        PromotionPolicy.mode, description="The SurgeModel's spec.promotion.policy, so the "
        "report's gate verdict is the operator's.")
    min_improvement_over_persistence_pct: float = Field(
        PromotionPolicy.min_improvement_over_persistence_pct, ge=0, le=100,
        description="The SurgeModel's spec.promotion.minImprovementOverPersistencePct.")
    max_regression_vs_champion_pct: float = Field(
        PromotionPolicy.max_regression_vs_champion_pct, ge=0, le=100,
        description="The SurgeModel's spec.promotion.maxRegressionVsChampionPct.")
    run_key: str | None = Field(
        None, description="Idempotency key: a retried Job with the same key reuses its run."
    )
    experiment: str | None = Field(None, description="MLflow experiment; default = model name.")
    rejected_dir: str = Field(".pulsar/rejected", description="Where rejected rows are written.")

    @field_validator("horizons_minutes")
    @classmethod
    def _horizons_are_periods(cls, value: list[float]) -> list[float]:
        for horizon in value:
            if problem := horizon_problem(horizon):
                raise ValueError(f"horizons_minutes: {problem}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _one_source(self) -> TrainSettings:
        if self.clickhouse_url and self.data_uri:
            raise ValueError("data_uri and clickhouse_url are both set: train from files "
                             "(--data / PULSAR_DATA_URI) or from ClickHouse "
                             "(--clickhouse-url / PULSAR_CLICKHOUSE_URL), not both")
        if self.clickhouse_url and self.city_id is None:
            raise ValueError("clickhouse_url needs city_id (--city-id / PULSAR_CITY_ID): the "
                             "table holds every city's records")
        return self

    @property
    def registered_model(self) -> str:
        return self.registered_model_name or registered_model_name(self.city, self.service_type)

    def promotion(self) -> PromotionPolicy:
        """The SurgeModel's promotion policy (the gate's thresholds)."""
        return PromotionPolicy(self.promotion_policy, self.min_improvement_over_persistence_pct,
                               self.max_regression_vs_champion_pct)


class ServeSettings(_EnvContract):
    """What a predictor Deployment needs; `pulsar serve` flags map onto the same fields."""

    mlflow_tracking_uri: str = Field("sqlite:///.pulsar/mlflow.db", description="MLflow URI.")
    registered_model: str = Field("pulsar-tehran-all", description="MLflow registered model.")
    model_alias: str = Field("champion", description="Alias to serve when no version is pinned.")
    model_version: str | None = Field(None, description="Pinned version; wins over the alias.")
    nats_url: str | None = Field(None, description="Live signals and promotion events.")
    city: str = Field("tehran", description="City slug of pulsar.signals.<city>.<service>.")
    service_type: str = Field("all", description="Service slug of the signals subject.")
    host: str = Field("0.0.0.0", description="Address the HTTP server binds.")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port.")
    auth_token: str | None = Field(
        None, description="Bearer token required when set (unset: no auth; empty or "
        "whitespace-only is an error).")
    max_hexagons: int = Field(5000, ge=1, description="More hexagons in one request -> 413.")
    confidence_threshold: float = Field(
        0.5, ge=0, le=1, description="Forecasts below this confidence are low_confidence.")
    alias_poll_seconds: float = Field(
        60.0, gt=0, description="How often the alias is re-read (promotions missed on NATS).")
    live_max_age_minutes: float = Field(
        60.0, gt=0, description="/readyz fails when live data is older (0 data = ready)."
    )
    live_max_future_minutes: float = Field(
        15.0, ge=0, description="Live rows dated further ahead of this clock are rejected "
        "(in_future:period_start).")
    live_max_past_hours: float = Field(
        192.0, gt=0, description="Live rows older than this are rejected (too_old:period_start).")
    live_city_rings: int = Field(
        3, ge=0, le=50, description="Live rows of a cell more than this many H3 rings from every "
        "cell the model was trained on are rejected (outside_city).")
    live_max_new_series: int = Field(
        2000, ge=0, le=1_000_000, description="Live series (hexagon x service type) the model "
        "was not trained on that the live buffer keeps; beyond, a newcomer replaces one silent "
        "for two periods or is rejected (new_series_budget). Trained series are never evicted.")
    live_buffer_max_mb: int = Field(
        512, ge=16, le=1 << 20, description="Memory budget of the live buffer (estimated, "
        "pulsar_live_buffer_bytes): new series beyond it are rejected (memory_budget); size it "
        "above the trained series' need.")
    request_timeout_seconds: float = Field(
        2.0, gt=0, description="A forecast taking longer, time queued included, answers 504.")
    max_body_bytes: int = Field(
        16 << 20, ge=1024, description="A larger request body answers 413 (never read whole).")
    body_timeout_seconds: float = Field(
        10.0, gt=0, description="A request body not fully received by then answers 408.")
    breaker_failures: int = Field(5, ge=1, description="CNN failures before the breaker opens.")
    breaker_cooldown_seconds: float = Field(
        30.0, gt=0, description="Seconds the open breaker skips the CNN before one probe.")
    fallback: Fallback = Field(
        Fallback.ELASTICNET, description="Who answers when the CNN fails or its breaker is open: "
        "elasticnet, persistence, or none (503).")
    drift_ratio: float = Field(
        1.5, gt=1, description="Live MAE / evaluation MAE that raises a drift retrain request.")
    drift_min_scored: int = Field(
        200, ge=1, description="Scored forecasts of a horizon before drift is judged.")
    drift_window: int = Field(1000, ge=1, description="Rolling window of live errors per horizon.")
    drift_max_pending: int = Field(
        300_000, ge=1, description="Forecasts kept waiting for their actual (memory bound).")
    drift_max_age_hours: float = Field(
        6.0, gt=0, description="A forecast whose target is this far behind never gets scored.")
    drift_cooldown_seconds: float = Field(
        3600.0, gt=0, description="At most one drift retrain request per model version per "
        "cool-down.")
    retrain_subject: str | None = Field(
        None, description="Where drift retrain requests go: the SurgeModel's own subject (set "
        "by the operator); default: derived from registered_model, city and service_type.")
    role: Literal["champion", "shadow"] = Field(
        "champion", description="champion serves clients; shadow (a challenger beside it) "
        "forecasts the same live signals only to be scored, and never asks for a retrain.")
    max_headers: int = Field(
        100, ge=10, le=10_000, description="A request with more headers answers 431 and its "
        "connection is closed.")
    max_header_bytes: int = Field(
        16 << 10, ge=1024, le=1 << 20, description="A request line plus headers larger than "
        "this answers 431 and its connection is closed.")
    header_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="A connection whose request headers are not complete "
        "this long after it opened (or after its previous response) answers 408 and is closed, "
        "so half-sent requests cannot hold sockets.")
    keep_alive_seconds: int = Field(
        5, ge=1, le=300, description="An idle keep-alive connection is closed after this long.")
    max_concurrency: int = Field(
        1000, ge=2, description="Open connections plus running requests beyond which new "
        "requests answer 503 (uvicorn's limit_concurrency); /healthz, /readyz and /metrics are "
        "exempt, so probes do not restart a busy pod.")

    @field_validator("city", "service_type")
    @classmethod
    def _one_subject_token(cls, value: str) -> str:
        if problem := subject_token_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("retrain_subject")
    @classmethod
    def _one_concrete_subject(cls, value: str | None) -> str | None:
        """Drift requests are published there: a wildcard is no subject to publish on."""
        if value is None:
            return None
        for token in value.split("."):
            if problem := subject_token_problem(token):
                raise ValueError(f"retrain_subject {value[:80]!r}: {problem}")
        return value

    @field_validator("auth_token")
    @classmethod
    def _token_is_usable(cls, value: str | None) -> str | None:
        """An empty token would silently turn auth off, a blank one lock everyone out."""
        if value is None:
            return None
        if not value.strip():
            raise ValueError("set but empty or blank: unset PULSAR_AUTH_TOKEN to serve without "
                             "auth, or give the token")
        if value != value.strip():
            raise ValueError("has leading or trailing whitespace (a newline echoed into the "
                             "Secret?): strip it")
        return value


class BridgeSettings(_EnvContract):
    """What a signal bridge Deployment needs; `pulsar bridge` flags map onto the same fields.

    The bridge keeps `pulsar.signals.<city>.<service>` fed from the ClickHouse table of raw
    kandoo records (or relays a raw-record NATS subject), aggregated by pulsar_core.data.kandoo.
    """

    clickhouse_url: str | None = Field(
        None, description="ClickHouse HTTP endpoint (http[s]://host:8123) polled for new rows.")
    clickhouse_database: str = Field(CLICKHOUSE_DATABASE, description="ClickHouse database.")
    clickhouse_table: str = Field(CLICKHOUSE_TABLE, description="Table of raw kandoo records.")
    clickhouse_user: str | None = Field(
        None, description="ClickHouse user (from a Secret; unset: the server's default user).")
    clickhouse_password: SecretStr | None = Field(
        None, description="ClickHouse password: environment only (a Secret), never a flag.")
    relay_subject: str | None = Field(
        None, description="Relay raw kandoo records from this NATS subject instead of polling "
        "ClickHouse (the table's upstream, where a city's records are on NATS already).")
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS with JetStream.")
    city: str = Field("tehran", description="City slug of pulsar.signals.<city>.<service>.")
    city_id: int = Field(1, ge=1, le=2**31 - 1, description="Rows of this city id only.")
    service_type: str = Field("all", description="Service slug of the signals subject.")
    service_type_id: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Rows of this service type id only; unset: all.")
    host: str = Field("0.0.0.0", description="Address of /readyz, /healthz and /metrics.")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port of /readyz and /metrics.")
    poll_seconds: float = Field(
        15.0, gt=0, description="How often ClickHouse is asked for rows newer than the watermark.")
    close_after_seconds: float = Field(
        60.0, ge=0, description="A period is closed (aggregated and published) this long after "
        "its end, so its last rows have landed.")
    lateness_seconds: float = Field(
        900.0, ge=0, description="Closed periods this far behind the watermark are re-checked; "
        "a late row there re-publishes its period once. Later rows are ignored.")
    backfill_hours: float = Field(
        192.0, ge=0, description="On first start (no watermark) publish this much history, the "
        "predictors' live window (PULSAR_LIVE_MAX_PAST_HOURS), for their warm start.")
    slice_hours: float = Field(
        6.0, gt=0, description="At most this many hours of new periods per query (a backfill or "
        "a backlog after an outage is read in slices: bounded memory).")
    backoff_max_seconds: float = Field(
        60.0, gt=0, description="Cap of the exponential backoff while ClickHouse fails.")
    ready_max_age_seconds: float = Field(
        120.0, gt=0, description="/readyz fails when the last successful poll is older.")
    dedupe_window_seconds: float = Field(
        3600.0, gt=0, description="JetStream duplicate window the bridge sets on PULSAR_SIGNALS "
        "(at least lateness + 4 polls): a second replica's copies are dropped by the server.")

    @model_validator(mode="after")
    def _window_covers_lateness(self) -> BridgeSettings:
        needed = self.lateness_seconds + 4 * self.poll_seconds
        if self.dedupe_window_seconds < needed:
            raise ValueError(f"dedupe_window_seconds ({self.dedupe_window_seconds:g}) must be at "
                             f"least lateness_seconds + 4 x poll_seconds ({needed:g})")
        return self
