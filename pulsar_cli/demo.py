"""`pulsar demo`: a synthetic city -> train -> MLflow (local sqlite) -> gate -> champion.

Everything lands in ./.pulsar/ (data, mlflow.db, mlartifacts, rejected rows). A second run with
the same data and settings reuses what exists: the same run key finds the same version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulsar_core.settings import TrainSettings

if TYPE_CHECKING:
    import pandas as pd

    from pulsar_cli.demo_stack import DemoStack
    from pulsar_cli.report import ReportData

WORKDIR = Path(".pulsar")
HORIZONS = (7.5, 30.0, 60.0, 90.0)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulsar demo",
        description="Train a surge model on a synthetic city (or --data), register it in a "
                    "local MLflow, run the promotion gate and promote it if it passes.",
    )
    parser.add_argument("--data", nargs="+", metavar="PATH",
                        help="real snapshot Parquet / kandoo CSV instead of synthetic data")
    parser.add_argument("--city", default=None, help="city slug (default: demo, or tehran "
                        "with --data)")
    parser.add_argument("--hexagons", type=int, default=300, help="synthetic hexagons")
    parser.add_argument("--days", type=int, default=7, help="synthetic days")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cnn-epochs", type=int, default=8,
                        help="CNN epochs (training default 30; the demo stays under a minute)")
    parser.add_argument("--cnn-seeds", type=int, default=1,
                        help="CNN seed-ensemble members (training default 3)")
    parser.add_argument("--cnn-max-rows", type=int, default=60_000,
                        help="CNN training rows per fold (training default 250,000)")
    parser.add_argument("--backtest-folds", type=int, default=2,
                        help="newest rolling-origin folds evaluated (training default: all)")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--no-serve", action="store_true",
                        help="stop after the gate: no NATS, predictor, live forecasts or report")
    parser.add_argument("--replay-periods", type=int, default=12,
                        help="newest periods per series replayed as live signals")
    return parser


def _say(started: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def synthetic_city(workdir: Path, hexagons: int, days: int, seed: int) -> Path:
    """Generate (once) the demo city: 3 service types, the real data's quirks, 5-hour daily runs.

    The real data's ~10-period runs leave no 90-minute target; the demo's runs are long enough
    for every horizon to be evaluated and learned (`generate_snapshots(mode="long_runs")`).
    """
    from pulsar_core.data.synthetic import generate_snapshots

    path = workdir / "data" / f"synthetic-long-{hexagons}h-{days}d-seed{seed}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = generate_snapshots(n_hexagons=hexagons, service_types=(1, 2, 3), days=days,
                                   seed=seed, mode="long_runs")
        frame.to_parquet(path.with_suffix(".tmp"), index=False)
        path.with_suffix(".tmp").rename(path)  # atomic: an interrupted demo leaves no half file
    return path


def run_key(paths: list[str], settings: dict[str, object]) -> str:
    """Same inputs (file contents) and same settings -> same key -> same registered version."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted(paths):
        file = Path(path)
        if file.is_file():
            digest.update(file.read_bytes())
        else:
            digest.update(path.encode())
    return f"demo-{digest.hexdigest()[:16]}"


def _experiment(settings: TrainSettings, artifacts: Path) -> None:
    """The demo's experiment keeps its artifacts under .pulsar/mlartifacts."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    name = settings.experiment or settings.registered_model
    if mlflow.get_experiment_by_name(name) is None:
        artifacts.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


def demo_settings(args: argparse.Namespace, say: Callable[[str], None]) -> TrainSettings:
    """The demo's training settings (the synthetic city is generated here when needed)."""
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.data:
        data = [str(p) for p in args.data]
    else:
        say(f"synthetic city: {args.hexagons} hexagons x 3 service types x {args.days} days")
        data = [str(synthetic_city(workdir, args.hexagons, args.days, args.seed))]
    values: dict[str, Any] = {
        # absolute: the predictor subprocess and `mlflow ui` may run from another directory,
        # and MLflow caches stores by URI within a process
        "mlflow_tracking_uri": f"sqlite:///{(workdir / 'mlflow.db').resolve()}",
        "data_uri": data, "city": args.city or ("tehran" if args.data else "demo"),
        "service_type": "all", "cnn_epochs": args.cnn_epochs, "seed": args.seed,
        "cnn_seeds": args.cnn_seeds, "backtest_folds": args.backtest_folds,
        "cnn_max_train_rows": args.cnn_max_rows,
        "horizons_minutes": list(HORIZONS),
        "rejected_dir": str(workdir / "rejected"), "model_name": "demo",
    }
    say(f"cheaper than a real training run, to stay under a minute: {args.cnn_epochs} CNN epochs "
        f"(default 30), {args.cnn_seeds} CNN seed(s) (default 3), {args.cnn_max_rows:,} CNN "
        f"rows per fold (default 250,000), the newest {args.backtest_folds} backtest fold(s) "
        "(default all)")
    return TrainSettings.model_validate({**values, "run_key": run_key(data, values)})


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    say = _say(time.monotonic())
    settings = demo_settings(args, say)
    code, served = _train_and_promote(settings, args.workdir, say)
    if code != 0 or args.no_serve:
        return code
    return serve_and_report(settings, served, args.workdir, args.replay_periods, say)


def horizon_line(scores: dict[float, Any]) -> str:
    """Which horizons the hold-out evaluated, and which this data cannot (no target that far)."""
    done = [f"{h:g}" for h, score in sorted(scores.items()) if score.mae is not None]
    not_done = [f"{h:g}" for h, score in sorted(scores.items()) if score.mae is None]
    line = f"\nevaluated horizons: {', '.join(done) or 'none'} min"
    if not_done:
        line += (f"; not evaluable in this data: {', '.join(not_done)} min (no run of consecutive "
                 "periods reaches that far ahead, so persistence answers there)")
    return line


def _train_and_promote(settings: TrainSettings, workdir: Path,
                       say: Callable[[str], None]) -> tuple[int, dict[str, str]]:
    """Train, register, gate, promote; returns the exit code and what `pulsar serve` serves."""
    from pulsar_trainer.cli import EXIT_INTERNAL, configure_logging, error_code
    from pulsar_trainer.pipeline import run_training

    from pulsar_core.promotion import plan_promotion
    from pulsar_core.registry import Registry

    configure_logging(False)
    _experiment(settings, workdir / "mlartifacts")
    try:
        outcome = run_training(settings, progress=say)
    except Exception as error:
        code = error_code(error)
        if code == EXIT_INTERNAL:
            raise
        print(f"pulsar demo: {str(error).splitlines()[0]}", file=sys.stderr)
        return code, {}
    print(outcome.table)
    print(horizon_line(outcome.scores))
    print(f"\nregistered: {outcome.model_name} version {outcome.version}"
          + (" (reused: same data and settings as an earlier run)"
             if outcome.reused != "new" else ""))
    verdict = outcome.verdict
    print(f"gate: {'PASS' if verdict.passed else 'FAIL'}: {verdict.reason}")
    registry = Registry(settings.mlflow_tracking_uri)
    champion = registry.get_alias(outcome.model_name)
    # The operator's decision, not a copy of it: the same plan an auto SurgeModel would follow.
    plan = plan_promotion(registry.versions(outcome.model_name), champion, settings.promotion(),
                          now=datetime.now(UTC))
    if plan.target is not None:
        registry.set_alias(outcome.model_name, plan.target.version)
        print(f"promoted: version {plan.target.version} is now the champion"
              + (f" (was {champion.version})" if champion else ""))
    elif champion is not None and champion.version == outcome.version:
        print(f"champion: version {outcome.version} already is the champion")
    else:
        kept = champion.version if champion else "none yet"
        print(f"not promoted: the champion stays {kept} ({plan.reason})")
    print("\nopen the MLflow UI:\n  mlflow ui --backend-store-uri "
          f"{settings.mlflow_tracking_uri}\n  (then http://127.0.0.1:5000, "
          f"model {outcome.model_name})")
    served = {"registered_model": outcome.model_name}
    if registry.get_alias(outcome.model_name) is None:
        served["model_version"] = outcome.version  # no champion yet: show the new version
    return 0, served




def serve_and_report(settings: TrainSettings, served: dict[str, str], workdir: Path,
                     periods: int, say: Callable[[str], None]) -> int:
    """nats-server + `pulsar serve`, replay live signals, print the top risers, write the report."""
    from pulsar_cli.demo_stack import DemoStack, StackError
    from pulsar_cli.live_map import MapError

    try:
        with DemoStack(workdir) as stack:
            url = start_services(stack, settings, served, say)
            replayed = replay_recent(stack, settings, url, periods, say)
            say("waiting until the predictor's live forecasts cover the replay")
            data = collect(url, settings, replayed)
            print(f"\n{data.summary}")
            print_top(data)
            path = write_report(data, workdir)
            print(f"\nreport: {path.resolve()} (open it in a browser; no network needed)")
            say("stopping the predictor and nats-server")
    except (StackError, MapError) as error:
        print(f"pulsar demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pulsar demo: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    return 0


REPLAY_MAX_PAST_HOURS = 24 * 365 * 30


def start_services(stack: DemoStack, settings: TrainSettings, served: dict[str, str],
                   say: Callable[[str], None]) -> str:
    """Start nats-server and the predictor; returns the predictor's base URL once ready."""
    say("starting nats-server (store under .pulsar/nats)")
    nats_url = stack.start_nats()
    settings_args = {**served, "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                     "nats_url": nats_url, "city": settings.city,
                     "service_type": settings.service_type,
                     # the demo replays the data's newest periods as live, whatever their date
                     "live_max_past_hours": str(REPLAY_MAX_PAST_HOURS)}
    say(f"starting the predictor (pulsar serve, {served}) and waiting for /readyz")
    url = stack.start_predictor(settings_args)
    say(f"predictor ready on {url} (API docs: {url}/docs)")
    return url


def replay_recent(stack: DemoStack, settings: TrainSettings, url: str, periods: int,
                  say: Callable[[str], None]) -> pd.DataFrame:
    """Publish the newest periods over NATS, wait until the predictor holds them; the rows."""
    from pulsar_cli.demo_stack import get_json, recent_rows, replay
    from pulsar_core.contract import Col
    from pulsar_core.events import signals_subject

    frame = recent_rows([str(p) for p in settings.data_uri], periods)
    series = len(frame.groupby([Col.HEXAGON, Col.SERVICE_TYPE]))
    subject = signals_subject(settings.city, settings.service_type)
    sent = replay(frame, stack.nats_url, subject)
    say(f"replayed {len(frame)} rows ({series} series x {periods} periods) in {sent} "
        f"messages on {subject}")

    def answered() -> bool:
        status, body = get_json(f"{url}/readyz")
        if status != 200 or body["live_series"] < series:
            return False
        status, top = get_json(f"{url}/v1/forecast/top?horizon={HORIZONS[0]:g}&limit=1")
        return status == 200 and bool(top["forecasts"])

    stack.wait_until(answered, 120.0, "live forecasts from /v1/forecast/top")
    return frame


def api(url: str) -> Any:
    """GET a predictor endpoint; a non-200 answer is a StackError naming the URL and body."""
    from pulsar_cli.demo_stack import StackError, get_json

    status, body = get_json(url)
    if status != 200:
        raise StackError(f"GET {url} answered {status}: {body}")
    return body


def collect(url: str, settings: TrainSettings, replayed: pd.DataFrame) -> ReportData:
    """The API answers the report shows, plus the run's evaluation artifacts from MLflow.

    The map holds every replayed series: its forecast, or the predictor's reason for none.
    """
    from pulsar_cli.live_map import collect_map
    from pulsar_cli.report import ReportData
    from pulsar_core.contract import Col
    from pulsar_core.evaluation import EvaluationReport

    # first: it waits until the live forecasts settle
    live = collect_map(url, replayed, settings.horizons_minutes)
    model = api(f"{url}/v1/model")["model"]
    data = ReportData(model=model, maps=live.forecasts, missing=live.missing,
                      notes=list(live.notes))
    data.summary = live.summary(replayed.groupby([Col.HEXAGON, Col.SERVICE_TYPE]).ngroups)
    report = _artifact(settings, model.get("run_id"), "evaluation/report.json", data)
    if report is not None:
        data.evaluation = EvaluationReport.from_dict(json.loads(report))
    data.plot_png = _artifact(settings, model.get("run_id"), "evaluation/forecast_vs_actual.png",
                              data)
    return data


def _artifact(settings: TrainSettings, run_id: str | None, path: str,
              data: ReportData) -> bytes | None:
    """One run artifact's bytes, or None with a note in the report saying why."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not run_id:
        data.notes.append(f"{path}: the served model names no MLflow run.")
        return None
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, tracking_uri=settings.mlflow_tracking_uri)
    except (MlflowException, OSError) as error:
        data.notes.append(f"{path}: not found in run {run_id} ({error}).")
        return None
    return Path(local).read_bytes()


def print_top(data: ReportData) -> None:
    """The top risers per horizon (largest expected absolute increase), with the % beside."""
    from pulsar_core.pages.hexmap import change_label

    def confidence(item: dict[str, Any]) -> str:
        return "n/a" if item["confidence"] is None else f"{item['confidence']:.2f}"

    for horizon in data.horizons():
        items = data.top(horizon, 5)
        print(f"\ntop rising hexagons in {horizon:g} minutes:")
        if not items:
            print("  none: no forecast expects an increase at this horizon")
        for item in items:
            print(f"  {item['hexagon']} service {item['service_type']}: "
                  f"{item['current']:.0f} -> {item['value']:.0f} "
                  f"(+{item['value'] - item['current']:.0f}, {change_label(item['change_pct'])}, "
                  f"confidence {confidence(item)}, {item['model']}) "
                  f"{item['explanation']}")


def write_report(data: ReportData, workdir: Path) -> Path:
    from pulsar_cli.report import render

    path = workdir / "report.html"
    path.with_suffix(".tmp").write_text(render(data), encoding="utf-8")
    path.with_suffix(".tmp").rename(path)
    return path
