"""Training cost on the full real file: wall time and peak memory per recipe, one process each.

Usage: python bench/bench_training.py [path.parquet] [--recipes today new ...] [--seed 7]
Each recipe trains exactly as `pulsar train` does (features, the rolling-origin backtest with
every fold, the CNN seed ensemble, the trees where the recipe has them, the served choice) in
a child process of its own (with its fold workers), so its memory is its own. Recipes:
- today: training.Recipe.before_issue_23() (features v1, ElasticNet + CNN ensemble);
- new: training.Recipe() (features v3, + boosted trees, calendar guard, balanced choices; the
  folds in one worker process per usable core, training.fold_processes);
- new-serial: new with every fold in this process (Recipe.fold_workers=1);
- new-bags3: new with three bagged tree fits per horizon (BoostingConfig.bags=3);
- new-lean: new with cnn_max_train_rows halved (the CNN ensemble's row budget, a setting).
CPU seconds are the recipe process's and its fold workers' (user + system). Peak RSS is the
recipe process's, with workers the largest worker's beside it; `PSS MB` (the goal's number) is
the peak of what the recipe's processes held at once, sampled, shared pages (the workers'
memory-mapped features) counted once.
Prints wall and CPU seconds, memory and each recipe's ratio to the first one, in this run (the
machine's other load hits both alike; run it on an idle machine for absolute numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "tehran_kandoo_snapshots.parquet"
RECIPES = ("today", "new", "new-serial", "new-bags3", "new-lean")


def _cpu_seconds() -> float:
    """User + system seconds of this process and its finished children (the fold workers)."""
    import resource

    own, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _child(path: Path, recipe_name: str, seed: int) -> None:
    import pandas as pd

    from pulsar_core.settings import TrainSettings
    from pulsar_core.training import Recipe, fold_processes, peak_rss_mb, train_forecaster

    snapshots = pd.read_parquet(path)
    params = TrainSettings(holdout_days=1.0, seed=seed)
    from pulsar_core.models.config import BoostingConfig
    from pulsar_core.models.cpu import usable_cores

    recipe = Recipe.before_issue_23() if recipe_name == "today" else Recipe(
        fold_workers=1 if recipe_name == "new-serial" else None)
    if recipe_name == "new-bags3":
        recipe = replace(recipe, boosting_config=BoostingConfig(bags=3))
    if recipe_name == "new-lean":
        params = params.model_copy(update={"cnn_max_train_rows": params.cnn_max_train_rows // 2})
    started, cpu = time.perf_counter(), _cpu_seconds()
    forecaster, report = train_forecaster(snapshots, params, recipe=recipe,
                                          progress=lambda _: None)
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    timings = forecaster.metadata["timings"]
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert report.backtest is not None
    workers = fold_processes(recipe, len(report.backtest.results), len(snapshots)) \
        if children else 0
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_rss_mb": peak_rss_mb(),
                      "worker_rss_mb": children, "workers": workers,
                      "all_rss_mb": peak_rss_mb() + workers * children,
                      "cores": usable_cores(),
                      "steps": {k: v for k, v in timings.items() if k.endswith("_seconds")}}))


def _sampled_run(command: list[str]) -> tuple[str, float]:
    """Run `command`; its stdout and the peak, sampled every half second, of the summed
    proportional set size (PSS: a page shared by n processes counts 1/n in each) of it and its
    descendants, in MB: what the recipe's processes held at once."""
    import threading

    import psutil

    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=os.environ.copy())
    peak, stop = 0.0, threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(child.pid)
        while not stop.wait(0.5):
            total = 0
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in processes:
                with contextlib.suppress(psutil.Error):  # ended between listing and reading
                    total += process.memory_full_info().pss
            peak = max(peak, total / 2**20)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, stderr = child.communicate()
    stop.set()
    thread.join()
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, command, stdout, stderr)
    return stdout, peak


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
        stdout, pss = _sampled_run([sys.executable, __file__, str(args.path), "--child", name,
                                    "--seed", str(args.seed)])
        results[name] = json.loads(stdout.strip().splitlines()[-1]) | {"pss_mb": pss}
        r = results[name]
        print(f"{name}: {r['wall']:.1f}s training, {r['cpu']:.1f}s CPU (with its workers) "
              f"({time.perf_counter() - clock:.1f}s with start-up and loading), peak RSS "
              f"{r['peak_rss_mb']:.0f} MB, {r['workers']} fold worker(s) on {r['cores']} "
              f"usable core(s) (largest {r['worker_rss_mb']:.0f} MB; the sum of their peaks "
              f"{r['all_rss_mb']:.0f} MB); all processes at once (PSS, sampled) {pss:.0f} MB; "
              + ", ".join(f"{k.removesuffix('_seconds')} {v:.1f}s"
                          for k, v in results[name]["steps"].items()), flush=True)
    first = args.recipes[0]
    print(f"\n{'recipe':<10} {'wall s':>8} {'x ' + first:>10} {'CPU s':>8} {'x ' + first:>10} "
          f"{'PSS MB':>8} {'x ' + first:>10}  (goal: < 240 s wall and < 3072 MB on an idle "
          "2-core machine; on a shared one CPU seconds are the fairer ratio)")
    for name, r in results.items():
        print(f"{name:<10} {r['wall']:8.1f} {r['wall'] / results[first]['wall']:10.2f} "
              f"{r['cpu']:8.1f} {r['cpu'] / results[first]['cpu']:10.2f} "
              f"{r['pss_mb']:8.0f} {r['pss_mb'] / results[first]['pss_mb']:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
