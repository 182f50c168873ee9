"""Training cost on the full real file: wall time and peak memory per recipe, one process each.

Usage: python bench/bench_training.py [path.parquet] [--recipes today new ...] [--seed 7]
Each recipe trains exactly as `pulsar train` does (features, the rolling-origin backtest with
every fold, the CNN seed ensemble, the trees where the recipe has them, the served choice) in
a child process of its own, so its peak RSS is its own. Recipes:
- today: training.Recipe.before_issue_23() (features v1, ElasticNet + CNN ensemble);
- new: training.Recipe() (features v2, + boosted trees, calendar guard, balanced choices);
- new-par: new with its folds in two worker processes (Recipe.fold_workers=2);
- new-lean: new with cnn_max_train_rows halved (the CNN ensemble's row budget, a setting).
Peak RSS of new-par is the parent's; each worker's is printed beside it.
Prints seconds, peak RSS and each recipe's ratio to the first one, measured in this run (the
machine's other load hits both alike; run it on an idle machine for absolute numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "tehran_kandoo_snapshots.parquet"
RECIPES = ("today", "new", "new-par", "new-lean")


def _child(path: Path, recipe_name: str, seed: int) -> None:
    import pandas as pd

    from pulsar_core.settings import TrainSettings
    from pulsar_core.training import Recipe, peak_rss_mb, train_forecaster

    snapshots = pd.read_parquet(path)
    params = TrainSettings(holdout_days=1.0, seed=seed)
    recipe = Recipe.before_issue_23() if recipe_name == "today" else Recipe(
        fold_workers=2 if recipe_name == "new-par" else 1)
    if recipe_name == "new-lean":
        params = params.model_copy(update={"cnn_max_train_rows": params.cnn_max_train_rows // 2})
    started, cpu = time.perf_counter(), time.process_time()
    forecaster, _ = train_forecaster(snapshots, params, recipe=recipe, progress=lambda _: None)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    timings = forecaster.metadata["timings"]
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_rss_mb": peak_rss_mb(),
                      "worker_rss_mb": children,
                      "steps": {k: v for k, v in timings.items() if k.endswith("_seconds")}}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=["today", "new"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", choices=RECIPES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.path.exists():
        print(f"skipped: real data not found at {args.path} (../shared/data is optional)")
        return 0
    if args.child:
        _child(args.path, args.child, args.seed)
        return 0
    results = {}
    for name in args.recipes:
        clock = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, str(args.path), "--child", name,
                               "--seed", str(args.seed)], capture_output=True, text=True,
                              check=True, env=os.environ.copy())
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]['wall']:.1f}s training, {results[name]['cpu']:.1f}s CPU "
              "(this process; workers not included) "
              f"({time.perf_counter() - clock:.1f}s with start-up and loading), peak RSS "
              f"{results[name]['peak_rss_mb']:.0f} MB (largest worker "
              f"{results[name]['worker_rss_mb']:.0f} MB); "
              + ", ".join(f"{k.removesuffix('_seconds')} {v:.1f}s"
                          for k, v in results[name]["steps"].items()), flush=True)
    first = args.recipes[0]
    print(f"\n{'recipe':<10} {'wall s':>8} {'x ' + first:>10} {'CPU s':>8} {'x ' + first:>10} "
          f"{'peak MB':>8} {'x ' + first:>10}  (goal: < 240 s wall and < 3072 MB on an idle "
          "2-core machine; on a shared one CPU seconds are the fairer ratio)")
    for name, r in results.items():
        print(f"{name:<10} {r['wall']:8.1f} {r['wall'] / results[first]['wall']:10.2f} "
              f"{r['cpu']:8.1f} {r['cpu'] / results[first]['cpu']:10.2f} "
              f"{r['peak_rss_mb']:8.0f} {r['peak_rss_mb'] / results[first]['peak_rss_mb']:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
