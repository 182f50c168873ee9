"""Load + validate (+ build features) on the real file and on 4x / 16x synthetic continuous data.

Each size runs in its own subprocess so its peak RSS is its own. Ratios are against the 1x
synthetic size measured in the same run (same generator, so only the size changes); the real
file is shown beside it. Run: `python bench/bench_data.py` (add --no-features to skip them;
--repeat N measures each size N times and keeps the fastest). A second table splits the feature
time per row into user and system CPU: system time is the kernel zeroing fresh pages for the
outputs, which costs more per byte on this VM than the feature code itself.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "tehran_kandoo_snapshots.parquet"
REAL_ROWS = 510_718
DAYS = 7
TYPES = (1, 2, 3)


def measure(path: str, features: bool) -> dict[str, float | int | str]:
    """Time one size in this process: load+validate, then build_features if available."""
    sys.path.insert(0, str(ROOT))
    from pulsar_core.data.loading import load_snapshots

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    result = load_snapshots(path)
    load_s, load_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    feature_s = feature_cpu_s = feature_user_s = feature_sys_s = math.nan
    note = "load+validate+features"
    if features:
        try:
            from pulsar_core.features import FeatureSpec, build_features
        except ImportError as err:  # written by another engineer; absent -> say so
            note = f"load+validate only (features unavailable: {err})"
        else:
            t1, u1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            build_features(result.snapshots, FeatureSpec())
            feature_s, u2 = time.perf_counter() - t1, resource.getrusage(resource.RUSAGE_SELF)
            feature_user_s, feature_sys_s = u2.ru_utime - u1.ru_utime, u2.ru_stime - u1.ru_stime
            feature_cpu_s = feature_user_s + feature_sys_s
    else:
        note = "load+validate only (--no-features)"
    return {
        "rows": len(result.snapshots), "rejected": result.rejected.rejected,
        "load_s": load_s, "load_cpu_s": load_cpu_s, "features_s": feature_s,
        "features_cpu_s": feature_cpu_s, "features_user_s": feature_user_s,
        "features_sys_s": feature_sys_s,
        "total_s": load_s + (0.0 if math.isnan(feature_s) else feature_s),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mb": rss_before / 1024, "note": note,
    }


def synthetic(folder: Path, factor: int) -> Path:
    """A continuous synthetic file with about `factor` x the real file's rows."""
    sys.path.insert(0, str(ROOT))
    from pulsar_core.data.synthetic import generate_snapshots

    hexagons = math.ceil(factor * REAL_ROWS / (len(TYPES) * 192 * DAYS))
    path = folder / f"synthetic_{factor}x.parquet"
    generate_snapshots(n_hexagons=hexagons, days=DAYS, service_types=TYPES, mode="continuous",
                       seed=factor).to_parquet(path, index=False)
    return path


def generate(folder: Path, factor: int) -> Path:
    """Generate in a child process, so this parent's peak RSS (inherited by children) stays low."""
    command = [sys.executable, __file__, "--generate", str(factor), "--folder", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def run_one(path: Path, features: bool, repeat: int) -> dict[str, float | int | str]:
    """The fastest (by total wall time) of `repeat` fresh subprocess measurements."""
    runs = [_run_once(path, features) for _ in range(repeat)]
    return min(runs, key=lambda r: float(r["total_s"]))


def _run_once(path: Path, features: bool) -> dict[str, float | int | str]:
    command = [sys.executable, __file__, "--measure", str(path)]
    if not features:
        command.append("--no-features")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--no-features", action="store_true")
    parser.add_argument("--sizes", default="1,4,16", help="synthetic size factors")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per size (fastest)")
    args = parser.parse_args()
    if args.generate:
        print(synthetic(Path(args.folder), args.generate))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, not args.no_features)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("real 1x", REAL)] if REAL.exists() else []
        for factor in (int(f) for f in args.sizes.split(",")):
            cases.append((f"synthetic {factor}x", generate(Path(tmp), factor)))
        results = [(name, run_one(path, not args.no_features, args.repeat)) for name, path in cases]
    base = next(r for name, r in results if name.startswith("synthetic"))
    print(f"{'input':<16}{'rows':>11}{'load+val s':>12}{'features s':>12}{'total s':>9}"
          f"{'rows/s':>11}{'peak MB':>9}{'x rows':>8}{'x load':>8}{'x cpu':>7}{'x feat':>8}"
          f"{'x fcpu':>8}{'x time':>8}{'x MB':>7}")
    for name, r in results:
        print(f"{name:<16}{r['rows']:>11,}{r['load_s']:>12.2f}{r['features_s']:>12.2f}"
              f"{r['total_s']:>9.2f}{r['rows'] / r['total_s']:>11,.0f}{r['peak_rss_mb']:>9.0f}"
              f"{r['rows'] / base['rows']:>8.2f}{r['load_s'] / base['load_s']:>8.2f}"
              f"{r['load_cpu_s'] / base['load_cpu_s']:>7.2f}"
              f"{r['features_s'] / base['features_s']:>8.2f}"
              f"{r['features_cpu_s'] / base['features_cpu_s']:>8.2f}"
              f"{r['total_s'] / base['total_s']:>8.2f}"
              f"{r['peak_rss_mb'] / base['peak_rss_mb']:>7.2f}")
    print("x load / x feat / x time: wall-time ratios; x cpu / x fcpu: CPU-time ratios of load and "
          "features (steadier on a shared host); x MB: peak RSS ratio")
    print(f"measured: {results[0][1]['note']}; ratios vs synthetic 1x; rejected rows: "
          f"{[r['rejected'] for _, r in results]}")
    if not args.no_features:
        print_per_row(results)


def print_per_row(results: list[tuple[str, dict[str, float | int | str]]]) -> None:
    """Feature cost per row: flat across sizes means linear scaling."""
    print(f"\n{'features':<16}{'wall us/row':>13}{'user us/row':>13}{'sys us/row':>12}"
          f"{'MB/M rows':>11}")
    for name, r in results:
        rows = float(r["rows"]) / 1e6
        print(f"{name:<16}{float(r['features_s']) / rows:>13.2f}"
              f"{float(r['features_user_s']) / rows:>13.2f}"
              f"{float(r['features_sys_s']) / rows:>12.2f}{float(r['peak_rss_mb']) / rows:>11.0f}")


if __name__ == "__main__":
    main()
