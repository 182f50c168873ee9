"""MLflow tracking for one training run: experiment, run-key lookup, what a run logs.

Tracking API only (runs, params, metrics, artifacts); the model registry is reached through
`pulsar_core.registry.Registry`, never from here. Every call names the settings' tracking URI;
only the logging inside a run goes through MLflow's process-wide URI (see `fluent_store`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulsar_core.redact import redact, split_credentials
from pulsar_core.registry import RUN_KEY_TAG
from pulsar_core.settings import SECRET_FIELDS, TrainSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from pulsar_core.backtest import BacktestedReport
    from pulsar_core.data.clickhouse_window import TrainingQuery
    from pulsar_core.data.report import RejectionReport
    from pulsar_core.gate import Paired

BUNDLE_TAG = "pulsar.bundle_uri"  # set last: a run carrying it has a complete bundle
SURGE_MODEL_TAG = "pulsar.surge_model"
TABLE_ARTIFACT = "evaluation/table.txt"
# Connection settings and credentials are not parameters of the model.
NOT_PARAMS = {"mlflow_tracking_uri", "nats_url"} | SECRET_FIELDS
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


class MlflowUnavailable(RuntimeError):
    """The tracking server did not answer; the message names the URI."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast on an unreachable `mlflow server` (MLflow's client would retry for minutes)."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    if not uri.startswith(("http://", "https://")):
        return
    # urllib takes no user:password@ in a URL (MLflow's requests does): sent as a header
    bare, headers = split_credentials(uri)
    probe = urllib.request.Request(f"{bare.rstrip('/')}/health", headers=headers)
    try:
        with urllib.request.urlopen(probe, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = redact(str(getattr(error, "reason", error)))
        raise MlflowUnavailable(
            f"MLflow at {bare} is unreachable ({reason}); check PULSAR_MLFLOW_TRACKING_URI"
        ) from None
    if status >= 500:
        raise MlflowUnavailable(f"MLflow at {bare} answered {status}")


def client(uri: str) -> MlflowClient:
    """A tracking client bound to `uri`, whatever MLflow's process-wide URI says."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextmanager
def fluent_store(uri: str) -> Iterator[None]:
    """MLflow's fluent API (start_run, log_*, pyfunc.log_model) pointed at `uri` for the block.

    pyfunc.log_model takes no tracking URI, it reads the process-wide one; so that is set here
    for the run only and cleared after, the caller's MLFLOW_TRACKING_URI restored as it was.
    """
    import mlflow

    before = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to "not set"
        if before is not None:
            os.environ[TRACKING_URI_ENV] = before


def experiment_id(settings: TrainSettings) -> str:
    """The id of the settings' experiment at their tracking URI (created if absent)."""
    tracking = client(settings.mlflow_tracking_uri)
    name = settings.experiment or settings.registered_model
    found = tracking.get_experiment_by_name(name)
    return found.experiment_id if found else tracking.create_experiment(name)


def run_for_key(uri: str, experiment: str, run_key: str) -> Run | None:
    """The newest run tagged with `run_key`, preferring one whose bundle was logged."""
    runs = client(uri).search_runs(
        [experiment], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'",
        order_by=["attributes.start_time DESC"], max_results=50,
    )
    complete = [r for r in runs if BUNDLE_TAG in r.data.tags]
    preferred = complete or runs
    return preferred[0] if preferred else None


def log_settings(settings: TrainSettings) -> None:
    import mlflow

    params = {k: json.dumps(v) if isinstance(v, list) else v
              for k, v in settings.model_dump(mode="json").items()
              if k not in NOT_PARAMS and v is not None}
    mlflow.log_params(params)
    tags = {SURGE_MODEL_TAG: f"{settings.model_namespace}/{settings.model_name}"}
    if settings.run_key:
        tags[RUN_KEY_TAG] = settings.run_key
    mlflow.set_tags(tags)


def _metric_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-/ ]+", "_", text).strip("_") or "unknown"


def log_query(query: TrainingQuery) -> None:
    """Exactly which rows a ClickHouse-fed run read: the window and scope as params, the SQL
    as an artifact (no credentials: they travel in a header, never in the query)."""
    import mlflow

    mlflow.log_params(query.as_params())
    mlflow.log_text(query.sql + "\n", "data/query.sql")


def log_load_report(report: RejectionReport) -> None:
    """Rows read/kept/rejected as metrics; rejected rows (Parquet) and the summary as artifacts."""
    import mlflow

    metrics = {"rows_read": report.rows_read, "rows_kept": report.rows_kept,
               "rows_rejected": report.rejected, "rows_out_of_scope": report.out_of_scope}
    metrics |= {f"rejected_{_metric_name(reason)}": n for reason, n in report.counts.items()}
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    mlflow.log_text(report.summary(), "data/load_report.txt")
    if report.path is not None and Path(report.path).exists():
        mlflow.log_artifact(str(report.path), "data")


def log_evaluation(report: BacktestedReport, metadata: dict[str, Any]) -> None:
    """Metrics, the table (CSV + text), the report as JSON and the forecast-vs-actual plot."""
    import mlflow

    mlflow.log_metrics(report.metrics())
    mlflow.log_metrics({k: float(v) for k, v in metadata.get("timings", {}).items()})
    mlflow.log_text(report.table.to_csv(index=False), "evaluation/table.csv")
    table = report.format_table()
    if report.backtest is not None:
        backtest = report.backtest
        mlflow.log_metrics(backtest.metrics())
        mlflow.log_text(backtest.table().to_csv(index=False), "evaluation/backtest_folds.csv")
        mlflow.log_text(backtest.service_table().to_csv(index=False),
                        "evaluation/backtest_by_service.csv")
        mlflow.log_text(backtest.band_table().to_csv(index=False),
                        "evaluation/backtest_by_band.csv")
        mlflow.log_dict(backtest.to_dict(), "evaluation/backtest.json")
        table = (f"{backtest.format()}\n\n{backtest.format_bands()}\n\n"
                 f"last fold (the bundle's test day):\n{table}")
    mlflow.log_text(table, TABLE_ARTIFACT)
    mlflow.log_dict(report.to_dict(), "evaluation/report.json")
    with tempfile.TemporaryDirectory(prefix="pulsar-plot-") as tmp:
        plot = Path(tmp) / "forecast_vs_actual.png"
        report.plot_forecast_vs_actual(plot)
        mlflow.log_artifact(str(plot), "evaluation")


def log_paired(paired: Paired) -> None:
    """The champion's and this run's MAE on the same rows, per fold and horizon."""
    import mlflow

    for score in paired.scores:
        tag = f"{score.horizon_minutes:g}m_{_metric_name(score.fold)}"
        mlflow.log_metrics({f"paired_mae_{tag}_candidate": score.mae,
                            f"paired_mae_{tag}_champion": score.champion_mae})


def logged_table(uri: str, run_id: str) -> str:
    """The evaluation table a run logged (for a retried Job that reuses the run)."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="pulsar-table-") as tmp:
        try:
            local = client(uri).download_artifacts(run_id, TABLE_ARTIFACT, tmp)
            return Path(local).read_text()
        except (MlflowException, OSError):
            return f"(run {run_id} logged no evaluation table)"
