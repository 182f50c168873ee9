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
from pathlib import Path

from pulsar_core.settings import TrainSettings

WORKDIR = Path(".pulsar")


def _parser() -> argparse.ArgumentParser:
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
                        help="CNN epochs (small: the demo should take a few minutes)")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    return parser


def _say(started: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def synthetic_city(workdir: Path, hexagons: int, days: int, seed: int) -> Path:
    """Generate (once) a synthetic city: 3 service types, daily runs like the real data."""
    from pulsar_core.data.synthetic import generate_snapshots

    path = workdir / "data" / f"synthetic-{hexagons}h-{days}d-seed{seed}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = generate_snapshots(n_hexagons=hexagons, service_types=(1, 2, 3), days=days,
                                   seed=seed)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    say = _say(time.monotonic())
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.data:
        data = [str(p) for p in args.data]
    else:
        say(f"synthetic city: {args.hexagons} hexagons x 3 service types x {args.days} days")
        data = [str(synthetic_city(workdir, args.hexagons, args.days, args.seed))]
    values: dict[str, object] = {
        "mlflow_tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
        "data_uri": data, "city": args.city or ("tehran" if args.data else "demo"),
        "service_type": "all", "cnn_epochs": args.cnn_epochs, "seed": args.seed,
        "rejected_dir": str(workdir / "rejected"), "model_name": "demo",
    }
    settings = TrainSettings(**values, run_key=run_key(data, values))
    return _train_and_promote(settings, workdir, say)


def _train_and_promote(settings: TrainSettings, workdir: Path, say: Callable[[str], None]) -> int:
    from pulsar_trainer.cli import EXIT_INTERNAL, configure_logging, error_code
    from pulsar_trainer.pipeline import run_training

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
        return code
    print(outcome.table)
    print(f"\nregistered: {outcome.model_name} version {outcome.version}"
          + (" (reused: same data and settings as an earlier run)"
             if outcome.reused != "new" else ""))
    verdict = outcome.verdict
    print(f"gate: {'PASS' if verdict.passed else 'FAIL'}: {verdict.reason}")
    registry = Registry(settings.mlflow_tracking_uri)
    if verdict.passed and outcome.champion_version != outcome.version:
        registry.set_alias(outcome.model_name, outcome.version)
        print(f"promoted: version {outcome.version} is now the champion"
              + (f" (was {outcome.champion_version})" if outcome.champion_version else ""))
    elif verdict.passed:
        print(f"champion: version {outcome.version} already is the champion")
    else:
        kept = outcome.champion_version or "none yet"
        print(f"not promoted: the champion stays {kept}")
    print("\nopen the MLflow UI:\n  mlflow ui --backend-store-uri "
          f"{settings.mlflow_tracking_uri}\n  (then http://127.0.0.1:5000, "
          f"model {outcome.model_name})")
    return 0
