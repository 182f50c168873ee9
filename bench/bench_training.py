"""Training time of each model on the full real file (features built once).

Usage: python bench/bench_training.py [path.parquet] [--epochs N]
Prints seconds per step and each step's ratio to ElasticNet training, measured in this run.
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
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    if not args.path.exists():
        print(f"skipped: real data not found at {args.path} (../shared/data is optional)")
        return 0
    from pulsar_core.features import FeatureSpec, build_features
    from pulsar_core.models.cnn import CNNConfig, train_cnn
    from pulsar_core.models.elasticnet import ElasticNetConfig, train_elasticnet
    from pulsar_core.settings import TrainSettings
    from pulsar_core.training import _split, time_splits

    params = TrainSettings()
    snapshots = pd.read_parquet(args.path)
    spec = FeatureSpec.for_minutes(params.horizons_minutes, params.window)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    features = build_features(snapshots, spec)
    seconds["features (all rows)"] = time.perf_counter() - clock
    splits = time_splits(features, params.holdout_days)
    train = _split(features, spec, None, splits.valid_start)
    valid = _split(features, spec, splits.valid_start, splits.test_start)
    clock = time.perf_counter()
    train_elasticnet(train, spec.horizons, ElasticNetConfig(
        alpha=params.elasticnet_alpha, l1_ratio=params.elasticnet_l1_ratio))
    seconds["elasticnet"] = time.perf_counter() - clock
    clock = time.perf_counter()
    config = CNNConfig(epochs=args.epochs, seed=params.seed)
    cnn = train_cnn(train, valid, spec.horizons, config)
    seconds["cnn"] = time.perf_counter() - clock
    print(f"{len(snapshots)} rows; train anchors {len(train)}, CNN rows capped at "
          f"{config.max_train_rows}, {len(cnn.history)} epochs run (early stopping)")
    print(f"{'step':<22} {'seconds':>9} {'x elasticnet':>13}")
    for name, value in seconds.items():
        print(f"{name:<22} {value:9.1f} {value / seconds['elasticnet']:13.2f}")
    print(f"cnn per epoch          {seconds['cnn'] / max(1, len(cnn.history)):9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
