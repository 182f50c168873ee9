"""One trainer run: load -> train -> evaluate -> log the bundle -> register -> gate -> event.

Idempotent per run key: a retried Job reuses the registered version, or the run it already
logged (registering it), or the run that crashed mid-training (training again inside it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pulsar_core.data.errors import DataContractError
from pulsar_core.data.report import RejectionReport
from pulsar_core.events import ModelRegistered, SurgeModelRef
from pulsar_core.gate import (
    GateVerdict,
    HorizonScore,
    Paired,
    paired_to_tags,
    scores_from_tags,
    scores_to_tags,
)
from pulsar_core.promotion import judge
from pulsar_core.publisher import PublishError, publish_model_registered
from pulsar_core.registry import RUN_KEY_TAG, Registry, VersionInfo
from pulsar_core.settings import TrainSettings
from pulsar_trainer import tracking

if TYPE_CHECKING:
    import pandas as pd

    from pulsar_core.backtest import BacktestedReport
    from pulsar_core.data.clickhouse_window import TrainingQuery
    from pulsar_core.data.loading import LoadResult
    from pulsar_core.data.window import TimeWindow
    from pulsar_core.forecaster import Forecaster

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
Reuse = Literal["new", "resumed-run", "logged-run", "registered-version"]


@dataclass
class TrainOutcome:
    """What a run produced; `reused` says how much of a previous attempt was reused."""

    model_name: str
    version: str
    run_id: str
    model_uri: str
    reused: Reuse
    scores: dict[float, HorizonScore]
    verdict: GateVerdict
    champion_version: str | None
    table: str
    metrics: dict[str, float] = field(default_factory=dict)
    rejected: RejectionReport | None = None
    published: str | None = None  # "core" | "jetstream:<stream>" | None
    publish_error: str | None = None


@dataclass
class Loaded:
    """The training data, and the ClickHouse query that read it (None for files)."""

    result: LoadResult
    query: TrainingQuery | None = None


@dataclass
class LoggedRun:
    run_id: str
    bundle_uri: str
    reused: Reuse
    table: str
    rejected: RejectionReport | None = None


def train_run(settings: TrainSettings, *, progress: Progress | None = None) -> LoggedRun:
    """Steps up to a complete MLflow run (bundle logged), reusing the run key's run if any."""
    import mlflow

    say = progress or log.info
    uri = settings.mlflow_tracking_uri
    experiment = tracking.experiment_id(settings)
    previous = (tracking.run_for_key(uri, experiment, settings.run_key) if settings.run_key
                else None)
    if previous is not None and tracking.BUNDLE_TAG in previous.data.tags:
        say(f"run key {settings.run_key}: reusing logged run {previous.info.run_id}")
        return LoggedRun(previous.info.run_id, previous.data.tags[tracking.BUNDLE_TAG],
                         "logged-run", tracking.logged_table(uri, previous.info.run_id))
    loaded = _load(settings, say)  # before any run exists: bad data leaves no failed run
    if previous is not None:
        say(f"run key {settings.run_key}: resuming unfinished run {previous.info.run_id}")
    reused: Reuse = "resumed-run" if previous is not None else "new"
    with tracking.fluent_store(uri), mlflow.start_run(
            run_id=previous.info.run_id if previous else None, experiment_id=experiment) as run:
        tracking.log_settings(settings)
        if loaded.query is not None:
            tracking.log_query(loaded.query)
        tracking.log_load_report(loaded.result.rejected)
        return _train_in_run(settings, loaded.result, run.info.run_id, reused, say)


def _load(settings: TrainSettings, say: Progress) -> Loaded:
    import pandas as pd

    from pulsar_core.data.loading import load_snapshots
    from pulsar_core.data.scope import require_one_city
    from pulsar_core.data.window import TimeWindow

    window = TimeWindow(max_future=pd.Timedelta(minutes=settings.data_max_future_minutes))
    query = None
    if settings.clickhouse_url:
        loaded, query = _load_clickhouse(settings, window, say)
    else:
        if not settings.data_uri:
            raise DataContractError("no input data: pass --data (PULSAR_DATA_URI) or "
                                    "--clickhouse-url (PULSAR_CLICKHOUSE_URL)")
        say(f"loading {', '.join(settings.data_uri)}")
        loaded = load_snapshots(
            settings.data_uri, data_format=settings.data_format, city_id=settings.city_id,
            service_type_id=settings.service_type_id, lookback_days=settings.lookback_days,
            rejected_dir=settings.rejected_dir, window=window,
            input_timezone=input_timezone(settings),
        )
    say(loaded.rejected.summary())
    if loaded.snapshots.empty:
        raise DataContractError(f"no valid rows left to train on: {loaded.rejected.one_line()}")
    require_one_city(loaded.snapshots, settings.city_id)
    return Loaded(loaded, query)


def input_timezone(settings: TrainSettings) -> str | None:
    """`--input-timezone`, with `city` read as the city's zone (the day boundaries' zone)."""
    from pulsar_core.folds import city_timezone

    if settings.input_timezone != "city":
        return settings.input_timezone
    return city_timezone(settings.city, settings.city_id, settings.timezone)


def _load_clickhouse(settings: TrainSettings, window: TimeWindow, say: Progress
                     ) -> tuple[LoadResult, TrainingQuery]:
    from pulsar_core.data.clickhouse import ClickHouseTable
    from pulsar_core.data.clickhouse_window import load_clickhouse

    password = settings.clickhouse_password
    table = ClickHouseTable(
        str(settings.clickhouse_url), settings.clickhouse_database, settings.clickhouse_table,
        user=settings.clickhouse_user,
        password=password.get_secret_value() if password is not None else None)
    say(f"loading {table.describe()} (city_id {settings.city_id}, last "
        f"{settings.lookback_days or 'all'} days)")
    loaded, query = load_clickhouse(
        table, city_id=settings.city_id, service_type_id=settings.service_type_id,
        lookback_days=settings.lookback_days, rejected_dir=settings.rejected_dir,
        window=window, input_timezone=input_timezone(settings))
    say(f"read window [{query.start.isoformat()}, {query.end.isoformat()}) of {query.source}")
    return loaded, query


def _train_in_run(settings: TrainSettings, loaded: LoadResult, run_id: str, reused: Reuse,
                  say: Progress) -> LoggedRun:
    import mlflow

    from pulsar_core.bundle import example_rows, log_bundle
    from pulsar_core.training import train_forecaster

    forecaster, report = train_forecaster(loaded.snapshots, settings, progress=say)
    tracking.log_evaluation(report, forecaster.metadata)
    table = report.format_table()
    if report.backtest is not None:
        table = (f"{report.backtest.format()}\n\n{report.backtest.format_bands()}\n\n"
                 f"last fold (the bundle's test day):\n{table}")
    paired = _pair_with_champion(settings, forecaster, report, loaded.snapshots, say)
    say("logging the bundle to MLflow")
    bundle = log_bundle(forecaster, report, example_rows(loaded.snapshots))
    mlflow.set_tags(scores_to_tags(report.gate_scores()))
    if paired is not None:
        mlflow.set_tags(paired_to_tags(paired))
    mlflow.set_tag(tracking.BUNDLE_TAG, bundle.model_uri)  # last: marks the run complete
    return LoggedRun(run_id, bundle.model_uri, reused, table, loaded.rejected)


def _pair_with_champion(settings: TrainSettings, forecaster: Forecaster,
                        report: BacktestedReport, snapshots: pd.DataFrame,
                        say: Progress) -> Paired | None:
    """The champion scored on this run's test folds (same rows), or None without a champion."""
    from pulsar_core.bundle import BundleNotFound, IncompatibleBundle, load_forecaster
    from pulsar_core.pairing import pair_with_champion

    if report.backtest is None or Registry(settings.mlflow_tracking_uri).get_alias(
            settings.registered_model) is None:
        return None
    try:
        champion = load_forecaster(settings.mlflow_tracking_uri, settings.registered_model)
    except (BundleNotFound, IncompatibleBundle) as error:
        say(f"champion not scored on this run's rows (the gate falls back to skill): {error}")
        return None
    paired = pair_with_champion(champion.forecaster, champion.version, snapshots,
                                report.backtest, forecaster.served)
    for score in paired.scores:
        say(f"paired with champion v{champion.version}, fold {score.fold}, "
            f"{score.horizon_minutes:g}m: MAE {score.mae:.2f} vs {score.champion_mae:.2f} "
            f"({score.rows} rows)")
    tracking.log_paired(paired)
    return paired


def _version_tags(settings: TrainSettings, run_tags: dict[str, str]) -> dict[str, str]:
    tags = {k: v for k, v in run_tags.items() if k.startswith("pulsar.gate.")}
    tags[tracking.SURGE_MODEL_TAG] = f"{settings.model_namespace}/{settings.model_name}"
    if settings.run_key:
        tags[RUN_KEY_TAG] = settings.run_key
    return tags


def register(settings: TrainSettings, logged: LoggedRun, registry: Registry) -> VersionInfo:
    """A new version of `settings.registered_model` from a complete run (gate inputs as tags)."""
    run_tags = tracking.client(settings.mlflow_tracking_uri).get_run(logged.run_id).data.tags
    return registry.create_version(settings.registered_model, logged.bundle_uri, logged.run_id,
                                   _version_tags(settings, run_tags))


def _served_metrics(uri: str, run_id: str) -> dict[str, float]:
    metrics = tracking.client(uri).get_run(run_id).data.metrics
    return {k: float(v) for k, v in sorted(metrics.items())
            if k.endswith("_served") or k.startswith(("coverage_", "rows_"))}


def run_training(settings: TrainSettings, *, progress: Progress | None = None) -> TrainOutcome:
    """The whole trainer Job; see the module docstring for what a retry reuses."""
    say = progress or log.info
    tracking.check_reachable(settings.mlflow_tracking_uri)
    registry = Registry(settings.mlflow_tracking_uri)
    name = settings.registered_model
    existing = registry.version_for_run_key(name, settings.run_key) if settings.run_key else None
    if existing is not None:
        say(f"run key {settings.run_key}: already registered as {name} version "
            f"{existing.version}")
        run_id = existing.run_id or ""
        logged = LoggedRun(run_id, existing.source, "registered-version",
                           tracking.logged_table(settings.mlflow_tracking_uri, run_id))
        version = existing
    else:
        logged = train_run(settings, progress=say)
        version = register(settings, logged, registry)
        say(f"registered {name} version {version.version}")
    scores = scores_from_tags(version.tags)
    champion = registry.get_alias(name)
    verdict = judge(version, champion, settings.promotion())
    outcome = TrainOutcome(
        model_name=name, version=version.version, run_id=logged.run_id,
        model_uri=registry.model_uri(name, version.version), reused=logged.reused,
        scores=scores, verdict=verdict, champion_version=champion.version if champion else None,
        table=logged.table, metrics=_served_metrics(settings.mlflow_tracking_uri, logged.run_id),
        rejected=logged.rejected,
    )
    if settings.nats_url:
        _publish(settings, outcome, say)
    return outcome


def _publish(settings: TrainSettings, outcome: TrainOutcome, say: Progress) -> None:
    """Best effort: the operator's registry poll finds the version even if NATS is down."""
    event = ModelRegistered(
        model_name=outcome.model_name, version=outcome.version, run_id=outcome.run_id,
        metrics=outcome.metrics,
        surge_model=SurgeModelRef(namespace=settings.model_namespace, name=settings.model_name),
    )
    try:
        outcome.published = publish_model_registered(str(settings.nats_url), event)
        say(f"published {outcome.model_name} v{outcome.version} on NATS ({outcome.published})")
    except PublishError as error:
        outcome.publish_error = str(error)
        log.warning("%s; the operator's registry poll will still find the version", error)
