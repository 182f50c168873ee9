"""Forecasts at a time of day the model has barely seen, and from one training to the next.

Usage: python bench/bench_time_of_day.py [path.parquet] [--seeds 7 17 27] [--epochs N]
                                          [--cnn-seeds N] [--no-baseline] [--no-folds]
On the real Tehran snapshots, in one process and on identical rows:
1. The rolling-origin folds (as `pulsar train` runs them), by horizon and by local time-of-day
   band, for today's recipe (training.Recipe.before_issue_23(): features v1, ElasticNet + CNN)
   and the new one (features v3, + boosted trees, calendar range guard, band-balanced
   walk-forward choices), and new served vs today's served MAE on the same rows per fold.
2. The daytime-session check: the least-covered time of day (the one 17:00-18:07 Tehran
   session) is the test; training is every other session but one, the latest, which validates
   (early stopping, blend weights, served choice). NOT time-ordered: it trains on nights after
   the test session. Served vs the strongest baseline per horizon on the test session.
3. With several --seeds: the new recipe trained once per seed; served MAE per fold and horizon
   and on the daytime check, max/min - 1 (goal < 3%).
Ratios are against baselines computed in this run on the same rows. Training wall time and peak
memory per recipe: bench/bench_training.py (one process per recipe).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "tehran_kandoo_snapshots.parquet"
DAY_GOAL = 0.95  # served / strongest baseline on the daytime session, every horizon


def _daytime_check(snapshots: pd.DataFrame, features: Any, params: Any, recipe: Any,
                   timezone: str) -> tuple[pd.DataFrame, str]:
    """Train on all sessions but the least-covered time of day's and one validation session;
    score served and the baselines on the held-out session."""
    from pulsar_core.backtest import (
        add_blend,
        choose_blend,
        choose_served_balanced,
    )
    from pulsar_core.contract import Col
    from pulsar_core.evaluation import BASELINE_NAMES, choose_served, evaluate, served_label
    from pulsar_core.folds import session_of, sessions, time_of_day_band
    from pulsar_core.training import _scored, fit_models

    found = sessions(features.keys[Col.PERIOD_START])
    starts = np.asarray([s.start.tz_convert("UTC").tz_localize(None).to_datetime64()
                         for s in found])
    bands = time_of_day_band(starts, timezone)
    counts = pd.Series(bands).value_counts()
    rare = counts.idxmin()
    test_session = max(s.index for s, b in zip(found, bands, strict=True) if b == rare)
    others = [s.index for s in found if s.index != test_session]
    # validation: the least-covered band among the rest, the latest session of it
    rest_bands = pd.Series([bands[i] for i in others]).value_counts()
    valid_session = max(i for i in others if bands[i] == rest_bands.idxmin())
    session = session_of(features.keys[Col.PERIOD_START], found)
    spec = replace(_spec(params), version=recipe.feature_version)
    parts = {name: features.subset(np.flatnonzero(mask)) for name, mask in (
        ("train", (session != test_session) & (session != valid_session) & (session >= 0)),
        ("valid", session == valid_session), ("test", session == test_session))}
    forecaster, _ = fit_models(parts["train"], parts["valid"], spec, params, recipe,
                               lambda _: None)
    valid = _scored(forecaster, parts["valid"], np.arange(len(parts["valid"])))
    test = _scored(forecaster, parts["test"], np.arange(len(parts["test"])))
    groups = time_of_day_band(valid.anchors, timezone)
    blend = choose_blend(valid.forecasts, valid.actual, spec.horizons,
                         groups if recipe.balanced else None)
    add_blend(valid.forecasts, blend, spec.horizons)
    add_blend(test.forecasts, blend, spec.horizons)
    if recipe.balanced:
        served = choose_served_balanced(valid, spec.horizons, groups)
    else:
        served = choose_served(evaluate(valid.forecasts, valid.actual, valid.current,
                                        spec.horizons, {}, split="validation"), spec.horizons)
    records = []
    for i, horizon in enumerate(spec.horizons):
        name = served_label(served[horizon])
        rows = np.isfinite(test.actual[:, i]) & np.isfinite(test.forecasts[name][:, i])
        if not rows.any():
            continue
        actual = test.actual[rows, i]
        mae = {n: float(np.abs(f[rows, i] - actual).mean()) for n, f in test.forecasts.items()
               if np.isfinite(f[rows, i]).all()}
        strongest = min((n for n in BASELINE_NAMES if n in mae), key=lambda n: mae[n])
        records.append({"horizon_minutes": horizon * 7.5, "served": served[horizon],
                        "served_mae": mae[name], "strongest": strongest,
                        "strongest_mae": mae[strongest],
                        "ratio": mae[name] / mae[strongest], "rows": int(rows.sum()),
                        **{f"{n}_mae": mae.get(n, np.nan) for n in
                           ("elasticnet", "cnn", "hgb", "blend")}})
    guarded = 0
    if forecaster.ranges:
        from pulsar_core.forecaster import outside_calendar

        guarded = int(outside_calendar(parts["test"], forecaster.ranges)[0].sum())
    header = (f"daytime-session check (NOT time-ordered: trains on sessions before and after "
              f"the test session): test {found[test_session].describe(timezone)} [{rare}]; "
              f"validation {found[valid_session].describe(timezone)}; training the other "
              f"{len(found) - 2} session(s), {len(parts['train'])} anchors; "
              f"{guarded} of {len(parts['test'])} test anchors outside the calendar range "
              f"(answered without the time of day); blend "
              + ", ".join(f"{h}: " + "+".join(f"{w:g}*{n}" for n, w in b.items())
                          for h, b in blend.items()))
    return pd.DataFrame.from_records(records), header


def _spec(params: Any) -> Any:
    from pulsar_core.features import FeatureSpec

    return FeatureSpec.for_minutes(params.horizons_minutes, params.window)


def _same_rows(new: Any, old: Any) -> pd.DataFrame:
    """New served vs today's served MAE per fold x horizon on the rows where both and the
    target exist (the folds' test rows are the same feature rows in both runs)."""
    from pulsar_core.evaluation import served_label

    records = []
    for a, b in zip(new.results, old.results, strict=True):
        assert np.array_equal(a.test.rows, b.test.rows), "the recipes scored different rows"
        for i, horizon in enumerate(new.horizons):
            fa = a.test.forecasts[served_label(a.served[horizon])][:, i]
            fb = b.test.forecasts[served_label(b.served[horizon])][:, i]
            rows = np.isfinite(a.test.actual[:, i]) & np.isfinite(fa) & np.isfinite(fb)
            if not rows.any():
                continue
            actual = a.test.actual[rows, i]
            new_mae = float(np.abs(fa[rows] - actual).mean())
            old_mae = float(np.abs(fb[rows] - actual).mean())
            records.append({"fold": a.fold.name, "horizon_minutes": horizon * 7.5,
                            "today": served_label(b.served[horizon]), "today_mae": old_mae,
                            "new": served_label(a.served[horizon]), "new_mae": new_mae,
                            "new/today": new_mae / old_mae, "rows": int(rows.sum())})
    return pd.DataFrame.from_records(records)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cnn-seeds", type=int, default=None,
                        help="CNN ensemble members (default: TrainSettings' own)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip today's recipe (no same-rows comparison)")
    parser.add_argument("--no-folds", action="store_true", help="only the daytime check")
    args = parser.parse_args()
    if not args.path.exists():
        print(f"skipped: real data not found at {args.path} (../shared/data is optional)")
        return 0
    from pulsar_core.features import build_features
    from pulsar_core.folds import city_timezone
    from pulsar_core.settings import TrainSettings
    from pulsar_core.training import Recipe, train_forecaster

    pd.set_option("display.width", 200)
    snapshots = pd.read_parquet(args.path)
    base_params = TrainSettings(holdout_days=1.0, cnn_epochs=args.epochs)
    if args.cnn_seeds is not None:
        base_params = base_params.model_copy(update={"cnn_seeds": args.cnn_seeds})
    timezone = city_timezone(base_params.city, base_params.city_id, base_params.timezone)
    # today's recipe with its folds in worker processes where cores allow: the same numbers
    # as in one process (tests/test_forecaster.py), in less time
    today = replace(Recipe.before_issue_23(), fold_workers=None)
    recipes = [] if args.no_baseline else [("today", today, args.seeds[0])]
    recipes += [(f"new seed {seed}", Recipe(), seed) for seed in args.seeds]
    features: dict[int, Any] = {}
    for version in sorted({r.feature_version for _, r, _ in recipes}):
        clock = time.perf_counter()
        features[version] = build_features(snapshots, replace(_spec(base_params),
                                                              version=version))
        print(f"features v{version}: {features[version].tabular.shape} "
              f"({time.perf_counter() - clock:.1f}s, built once for every fold and check)")
    served: dict[str, dict[tuple[str, float], float]] = {}
    backtests: dict[str, Any] = {}
    for label, recipe, seed in recipes:
        params = base_params.model_copy(update={"seed": seed})
        print(f"\n=== {label} ===")
        if not args.no_folds:
            clock = time.perf_counter()
            _, report = train_forecaster(snapshots, params, recipe=recipe,
                                         features=features[recipe.feature_version],
                                         progress=lambda _: None)
            assert report.backtest is not None
            backtests[label] = report.backtest
            print(f"folds trained in {time.perf_counter() - clock:.1f}s")
            print(report.backtest.format())
            print(report.backtest.format_bands())
            table = report.backtest.table()
            table = table[table.evaluable]
            served[label] = {(r.fold, r.horizon_minutes): r.served_mae
                             for r in table.itertuples()}
        clock = time.perf_counter()
        day, header = _daytime_check(snapshots, features[recipe.feature_version], params,
                                     recipe, timezone)
        print(f"\n{header} ({time.perf_counter() - clock:.1f}s)")
        print(day.round(3).to_string(index=False))
        worst = day.ratio.max() if not day.empty else np.nan
        print(f"daytime goal: served <= {DAY_GOAL} x strongest baseline at every horizon: "
              f"worst {worst:.3f} -> {'met' if worst <= DAY_GOAL else 'MISSED'}")
        for r in day.itertuples():
            served.setdefault(label, {})[("daytime check", r.horizon_minutes)] = r.served_mae
    if "today" in backtests:
        for label, backtest in backtests.items():
            if label == "today":
                continue
            print(f"\nsame rows, per fold: {label} served vs today's served")
            print(_same_rows(backtest, backtests["today"]).round(3).to_string(index=False))
    new = {k: v for k, v in served.items() if k.startswith("new")}
    if len(new) > 1:
        frame = pd.DataFrame(new)
        frame["spread_pct"] = 100 * (frame.max(axis=1) / frame.min(axis=1) - 1)
        print("\nseed stability of the new recipe: served MAE per fold and horizon, "
              "max/min - 1 (goal < 3%):")
        print(frame.round(2).to_string())
        print(f"worst spread {frame.spread_pct.max():.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
