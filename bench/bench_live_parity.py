"""Serving parity of the live buffer: forecasts from what the predictor's LiveBuffer holds vs
forecasts from the full history (what training and evaluation see), on the same anchors.

Usage: .venv/bin/python bench/bench_live_parity.py [--hexagons 30] [--days 10] [--anchors 24]
           [--epochs 1] [--scale-hexagons 300] [--real PATH] [--skip scale real]

Two buffers, fed the same rows: `legacy` (the runtime's configuration before serving parity:
128 full rows per series, no demand history) and `runtime` (as the runtime builds it now, from
`pulsar_core.features.lookback` of the model's spec). Ratios are against the full history
(accuracy) or against `legacy` (memory, time), all measured in the same run. The scale part
takes minutes (1.2M rows fed row by row under tracemalloc).

1. Accuracy (synthetic, continuous: every period of every day). Trains a small Forecaster
   (ElasticNet + a CNN of `--epochs` epochs, one backtest fold) on all but the last two days,
   then replays every row period by period through each buffer, exactly as the feed does
   (`LiveBuffer.add`), and at `--anchors` anchors spread over the two held-out days forecasts
   from `buffer.frame()` (what the predictor's live table is computed from). The baseline,
   in the same run: `Forecaster.predict` on the full frame truncated at the anchor. Prints
   MAE against the actual demand per horizon, the live/full ratio, the fraction of forecasts
   and of feature rows that differ, and which features differ.
2. Real data (skipped where absent): the Tehran snapshots replayed through each buffer; the
   fraction of feature rows at the end of each day that differ from the full frame's, apart
   for series whose last row is more than history_days old.
3. Scale (`--scale-hexagons` x 3 service types x 7 days + 1 period, continuous): each buffer's
   memory (tracemalloc, after feeding), the size of the frame a refresh builds, the peak a
   refresh allocates, the time to build the live forecast table (frame() + predict +
   LiveForecasts.build, median of 3) and the time the drift check then spends scoring
   against that frame, each also as a ratio to the legacy buffer's.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "predictor_image"))

from pulsar_predictor import runtime  # noqa: E402
from pulsar_predictor.buffer import LiveBuffer  # noqa: E402
from pulsar_predictor.forecast_cache import LiveForecasts  # noqa: E402

from pulsar_core.contract import Col, ForecastCol  # noqa: E402
from pulsar_core.features import FeatureSpec, build_features, lookback  # noqa: E402
from pulsar_core.forecaster import Forecaster  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "tehran_kandoo_snapshots.parquet"
KEY = [Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]


def legacy_buffer(spec: FeatureSpec) -> LiveBuffer:
    """The buffer as the runtime configured it before the fix (commit a506b6d): 128 full rows
    per series (2 x window when larger), history_days of time, no demand history."""
    buffer = LiveBuffer(128, runtime.LIVE_MAX_SERIES)
    buffer.ensure_history(spec.window * 2, pd.Timedelta(days=spec.history_days))
    return buffer


def runtime_buffer(spec: FeatureSpec) -> LiveBuffer:
    """The buffer as the runtime builds it now, once the model is loaded: full rows for what
    the lags read, demand and surge for history_days (pulsar_core.features.lookback)."""
    buffer = LiveBuffer.reading(lookback(FeatureSpec()), runtime.LIVE_MAX_SERIES)
    buffer.ensure_lookback(lookback(spec))
    return buffer


CONFIGS: dict[str, Callable[[FeatureSpec], LiveBuffer]] = {
    "legacy": legacy_buffer, "runtime": runtime_buffer}


def by_period(snapshots: pd.DataFrame) -> list[tuple[pd.Timestamp, pd.DataFrame]]:
    """The rows grouped by period, oldest first: how the feed delivers them."""
    return list(snapshots.sort_values(KEY).groupby(Col.PERIOD_START, sort=True))


def train(snapshots: pd.DataFrame, epochs: int) -> Forecaster:
    from pulsar_core.settings import TrainSettings
    from pulsar_core.training import train_forecaster

    params = TrainSettings(cnn_epochs=epochs, cnn_channels=8, cnn_seeds=1, cnn_batch_size=512,
                           holdout_days=1.0, backtest_folds=1)
    forecaster, _ = train_forecaster(snapshots, params)
    return forecaster


def _features(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    features = build_features(frame, spec, targets=False, last_only=True)
    table = pd.DataFrame(features.tabular, columns=features.tabular_names)
    sequence = features.sequence.reshape(len(features), -1)
    table["_sequence"] = [row.tobytes() for row in sequence]
    return pd.concat([features.keys, table], axis=1).set_index(KEY).sort_index()


def feature_diff(live: pd.DataFrame, full: pd.DataFrame) -> tuple[int, int, set[str]]:
    """(rows compared, rows with any feature different, names of the differing features)."""
    live, full = live.align(full, join="inner", axis=0)
    numeric = [c for c in full.columns if c != "_sequence"]
    a, b = live[numeric].to_numpy(), full[numeric].to_numpy()
    differs = ~np.isclose(a, b, rtol=1e-6, atol=1e-6)
    names = {numeric[i] for i in np.flatnonzero(differs.any(axis=0))}
    sequence = live["_sequence"].to_numpy() != full["_sequence"].to_numpy()
    if sequence.any():
        names.add("(cnn sequence)")
    rows = differs.any(axis=1) | sequence
    return len(full), int(rows.sum()), names


def accuracy(args: argparse.Namespace) -> Forecaster:
    from pulsar_core.data.synthetic import generate_snapshots

    snapshots = generate_snapshots(n_hexagons=args.hexagons, service_types=(1, 2),
                                   days=args.days, mode="continuous", seed=11)
    held_out = snapshots[Col.PERIOD_START].max().normalize() - pd.Timedelta(days=1)
    clock = time.perf_counter()
    forecaster = train(snapshots[snapshots[Col.PERIOD_START] < held_out], args.epochs)
    spec = forecaster.spec
    print(f"trained on {args.hexagons} hexagons x 2 service types x {args.days - 2} days "
          f"({time.perf_counter() - clock:.0f}s); served per horizon: {forecaster.served}")
    periods = by_period(snapshots)
    starts = [start for start, _ in periods]
    last = len(starts) - 1 - max(spec.horizons)
    first = starts.index(held_out)
    anchors = set(np.linspace(first, last, args.anchors).round().astype(int).tolist())
    actual = snapshots.set_index(KEY)[Col.DEMAND_SIGNAL]
    results: dict[str, list[pd.DataFrame]] = {"full": [], **{name: [] for name in CONFIGS}}
    feature_rows = {name: [0, 0, set()] for name in CONFIGS}
    buffers = {name: make(spec) for name, make in CONFIGS.items()}
    for index, (start, rows) in enumerate(periods):
        for buffer in buffers.values():
            buffer.add(rows)
        if index not in anchors:
            continue
        full = snapshots[snapshots[Col.PERIOD_START] <= start]
        results["full"].append(forecaster.predict(full).frame)
        full_features = _features(full, spec)
        for name, buffer in buffers.items():
            frame = buffer.frame()
            results[name].append(forecaster.predict(frame).frame)
            compared, differ, names = feature_diff(_features(frame, spec), full_features)
            tally = feature_rows[name]
            tally[0] += compared
            tally[1] += differ
            tally[2] |= names
    tables = {name: pd.concat(frames, ignore_index=True) for name, frames in results.items()}
    target = [ForecastCol.HEXAGON, ForecastCol.SERVICE_TYPE, ForecastCol.TARGET_PERIOD_START]
    base = tables["full"]
    truth = actual.reindex(pd.MultiIndex.from_frame(
        base[target].set_axis(KEY, axis=1))).to_numpy()
    print(f"\n{len(anchors)} anchors on the 2 held-out days, "
          f"{base[ForecastCol.HEXAGON].nunique() * 2} series each")
    print(f"{'buffer':<10} {'horizon':>8} {'MAE full':>9} {'MAE live':>9} {'live/full':>10} "
          f"{'forecasts differ':>17}")
    for name in CONFIGS:
        live = tables[name]
        merged = base.merge(live, on=[*target, ForecastCol.HORIZON_MINUTES],
                            suffixes=("_full", "_live"), validate="one_to_one")
        assert len(merged) == len(base), f"{name}: the live table lacks forecasts"
        for minutes, group in merged.assign(actual=truth).groupby(ForecastCol.HORIZON_MINUTES):
            ok = np.isfinite(group["actual"])
            full_mae = (group["value_full"] - group["actual"])[ok].abs().mean()
            live_mae = (group["value_live"] - group["actual"])[ok].abs().mean()
            differ = ~np.isclose(group["value_full"], group["value_live"], rtol=1e-6,
                                 atol=1e-6)
            print(f"{name:<10} {minutes:>7g}m {full_mae:9.2f} {live_mae:9.2f} "
                  f"{live_mae / full_mae:10.3f} {differ.mean():16.1%}")
        compared, differ, names = feature_rows[name]
        print(f"{name:<10} feature rows differing: {differ}/{compared} "
              f"({differ / max(compared, 1):.1%}); features: {sorted(names) or 'none'}")
    return forecaster


def _traced(feed: Callable[[], LiveBuffer]) -> tuple[LiveBuffer, float]:
    """The buffer `feed` builds and the memory it holds (MiB, tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    buffer = feed()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return buffer, held / 2**20


def _refresh_seconds(buffer: LiveBuffer, forecaster: Forecaster,
                     repeats: int = 3) -> tuple[float, float]:
    """Median seconds of (the live table's build, the drift check's scoring against the
    buffer's frame), as one refresh after a buffer change runs them."""
    from pulsar_predictor.drift import DriftPolicy, DriftScorer

    tables, drifts = [], []
    for _ in range(repeats):
        buffer._cached = None  # as after a change: the frame is rebuilt
        clock = time.perf_counter()
        inputs = buffer.frame()
        output = forecaster.predict(inputs)
        LiveForecasts.build("1", buffer.version, output.frame, 0.5, inputs)
        tables.append(time.perf_counter() - clock)
        scorer = DriftScorer({}, DriftPolicy())
        scorer.record(output.frame)
        clock = time.perf_counter()
        scorer.score(inputs, inputs[Col.PERIOD_END].max())
        drifts.append(time.perf_counter() - clock)
    return statistics.median(tables), statistics.median(drifts)


def _refresh_peak(buffer: LiveBuffer, forecaster: Forecaster) -> tuple[float, float]:
    """(MiB of the frame a refresh builds and the buffer caches until its next change, peak
    MiB a refresh allocates: frame + features + models), tracemalloc."""
    buffer._cached = None
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    inputs = buffer.frame()
    output = forecaster.predict(inputs)
    LiveForecasts.build("1", buffer.version, output.frame, 0.5, inputs)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return inputs.memory_usage(deep=True).sum() / 2**20, peak / 2**20


def scale(args: argparse.Namespace, forecaster: Forecaster) -> None:
    from pulsar_core.data.synthetic import generate_snapshots

    spec = forecaster.spec
    snapshots = generate_snapshots(n_hexagons=args.scale_hexagons, service_types=(1, 2, 3),
                                   days=8, mode="continuous", seed=5)
    newest = snapshots[Col.PERIOD_START].max()
    snapshots = snapshots[snapshots[Col.PERIOD_START]
                          >= newest - pd.Timedelta(days=spec.history_days)]
    periods = by_period(snapshots)
    series = args.scale_hexagons * 3
    print(f"\nscale: {series} series x {len(periods)} periods ({len(snapshots):,} rows fed)")
    print("buffer MiB: the buffer after feeding; frame MiB: the whole-buffer frame a refresh "
          "builds (cached until the next change); refresh peak MiB: allocated at the peak of "
          "one refresh (frame + features + models); table s / drift s: one refresh's live "
          "table build / drift scoring (median of 3); x: ratio to legacy")
    header = ["rows kept", "full rows", "buffer MiB", "frame MiB", "peak MiB", "table s",
              "drift s"]
    print(f"{'buffer':<10}" + "".join(f"{h:>11}" for h in header))
    ratios: dict[str, list[float]] = {}
    for name, make in CONFIGS.items():
        def feed(make: Callable[[FeatureSpec], LiveBuffer] = make) -> LiveBuffer:
            buffer = make(spec)
            for _, rows in periods:
                buffer.add(rows)
            return buffer
        buffer, mib = _traced(feed)
        frame_mib, peak_mib = _refresh_peak(buffer, forecaster)
        table, drift = _refresh_seconds(buffer, forecaster)
        values = [mib, frame_mib, peak_mib, table, drift]
        ratios[name] = values
        print(f"{name:<10}{buffer.row_count():>11,}{buffer.full_row_count():>11,}"
              + "".join(f"{v:>11.3f}" if v < 10 else f"{v:>11.1f}" for v in values))
        del buffer
        gc.collect()
    base = ratios[next(iter(CONFIGS))]
    for name, values in ratios.items():
        print(f"{name + ' x':<10}{'':>22}"
              + "".join(f"{v / b:>11.2f}" for v, b in zip(values, base, strict=True)))


def real(args: argparse.Namespace, spec: FeatureSpec) -> None:
    if not args.real.exists():
        print(f"\nreal data: skipped, not found at {args.real} (../shared/data is optional)")
        return
    snapshots = pd.read_parquet(args.real)
    periods = by_period(snapshots)
    buffers = {name: make(spec) for name, make in CONFIGS.items()}
    # An anchor at the end of each day's data: the buffer then holds everything up to it.
    days = pd.Series([start for start, _ in periods]).dt.normalize()
    ends = set(days.index[days != days.shift(-1)].tolist())
    # Series whose last row is more than history_days older than the newest period: their
    # neighbours' rows at their anchor may be gone from any bounded buffer (the feature reads
    # the neighbour at the anchor's period), so they are counted apart.
    tally = {(name, stale): [0, 0, set()] for name in CONFIGS for stale in (False, True)}
    for index, (start, rows) in enumerate(periods):
        for buffer in buffers.values():
            buffer.add(rows)
        if index not in ends:
            continue
        full = _features(snapshots[snapshots[Col.PERIOD_START] <= start], spec)
        old = full.index.get_level_values(Col.PERIOD_START) < start - pd.Timedelta(
            days=spec.history_days)
        for name, buffer in buffers.items():
            live = _features(buffer.frame(), spec)
            for stale in (False, True):
                compared, differ, names = feature_diff(live, full[old == stale])
                tally[name, stale][0] += compared
                tally[name, stale][1] += differ
                tally[name, stale][2] |= names
    print(f"\nreal data: {len(snapshots):,} rows, {len(ends)} anchors (end of each day); "
          "rows kept at the end (full rows): " + ", ".join(
              f"{name} {b.row_count():,} ({b.full_row_count():,})" for name, b in buffers.items()))
    for (name, stale), (compared, differ, names) in tally.items():
        which = "last row > history_days old" if stale else "last row within history_days"
        print(f"{name:<10} {which}: feature rows differing {differ}/{compared} "
              f"({differ / max(compared, 1):.1%}); features: {sorted(names) or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hexagons", type=int, default=30)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--anchors", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=1, help="CNN training epochs")
    parser.add_argument("--scale-hexagons", type=int, default=300)
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--skip", nargs="*", default=[], choices=["scale", "real"])
    args = parser.parse_args()
    forecaster = accuracy(args)
    if "real" not in args.skip:
        real(args, forecaster.spec)
    if "scale" not in args.skip:
        scale(args, forecaster)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
