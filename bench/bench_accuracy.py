"""Accuracy on the real Tehran snapshots: train (last day held out) and print the table.

Usage: python bench/bench_accuracy.py [path.parquet] [--save DIR]
Prints per horizon the MAE of the served model, both learned models and every baseline, with the
ratio to the strongest simple baseline measured on the same rows in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "tehran_kandoo_snapshots.parquet"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--save", type=Path, help="save the trained bundle here")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    if not args.path.exists():
        print(f"skipped: real data not found at {args.path} (../shared/data is optional)")
        return 0
    from pulsar_core.forecaster import train_forecaster
    from pulsar_core.settings import TrainSettings

    snapshots = pd.read_parquet(args.path)
    params = TrainSettings(holdout_days=1.0, cnn_epochs=args.epochs)
    started = time.perf_counter()
    forecaster, report = train_forecaster(snapshots, params, progress=print)
    print(f"\ntrained on {len(snapshots)} rows in {time.perf_counter() - started:.1f}s; "
          f"test = {forecaster.metadata['test_start']} .. {forecaster.metadata['data_end']}\n")
    print(report.format_table())
    print("\nserved / strongest baseline (MAE ratio, lower is better; target <= 0.85 at 7.5m, "
          "<= 0.95 at 30m, <= 1.0 everywhere):")
    for horizon, score in report.gate_scores().items():
        verdict = f"{score.skill:.3f}" if score.skill is not None else "not evaluable"
        print(f"  {horizon:>5g} min: {verdict}")
    if args.save:
        forecaster.save(args.save)
        print(f"bundle saved to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
