"""Time-ordered training: a rolling-origin backtest over calendar days; the bundle is its last fold.

Folds (pulsar_core.folds): test = one block of `holdout_days` calendar days in the city's time
zone, validation = the block before it (early stopping, blend weights, served choice), training
= every earlier day. A row's target is dropped when it falls in a later split than its anchor, so
no split sees the next one's values. The served model is the last fold's, with the served choice
per horizon made on the pooled validation days (backtest.walk_forward); where the backtest shows
a fold on which that choice loses to the fold's strongest baseline by more than 2%, the bundle
serves the validation-chosen baseline at that horizon instead, and says so in its metadata.

`Recipe` says what a run builds beyond the settings (issue 23: feature version 3, the boosted
trees, the calendar range guard, a CNN no hour steers, band-balanced walk-forward choices);
`Recipe.before_issue_23()` is the code path of the bundles before it, kept so that benchmarks
compare both on the same rows in the same process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

import pulsar_core
from pulsar_core.backtest import (
    Backtest,
    BacktestedReport,
    FoldResult,
    Scored,
    add_blend,
    choose_blend,
    describe_weights,
    walk_forward,
)
from pulsar_core.contract import PERIOD, Col
from pulsar_core.data.geography import resolutions
from pulsar_core.evaluation import EvaluationReport, evaluate
from pulsar_core.features import FeatureSet, FeatureSpec, build_features
from pulsar_core.folds import Fold, city_timezone, make_folds
from pulsar_core.forecaster import (
    Forecaster,
    calendar_free,
    calendar_readers,
    feature_ranges,
    guard,
    outside_calendar,
)
from pulsar_core.models.baselines import BASELINES, baseline_forecast
from pulsar_core.models.boosting import train_boosting
from pulsar_core.models.config import BoostingConfig, CNNConfig, ElasticNetConfig
from pulsar_core.models.cpu import memory_workers, usable_cores
from pulsar_core.models.elasticnet import train_elasticnet
from pulsar_core.models.ensemble import train_cnn_ensemble
from pulsar_core.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """What a training run builds beyond TrainSettings."""

    feature_version: int = 3  # FeatureSpec.version
    boosting: bool = True  # the third learner (models.boosting)
    guard_calendar: bool = True  # calendar inputs outside their training range -> the trees
    balanced: bool = True  # walk-forward blend + served choice, time-of-day bands equal
    cnn_valid_rows: int | None = 30_000  # CNN early stopping on a sample (None: all rows)
    cnn_calendar: bool = False  # the CNN reads the time of day (CNNConfig.calendar)
    # Folds trained in this many processes at once (1: in this process; None: one per usable
    # core where the data repays starting them, see fold_processes). Each worker maps the
    # features from one temporary copy on disk and returns its scores; the bundle's fold
    # returns its models through Forecaster.save / load.
    fold_workers: int | None = None
    boosting_config: BoostingConfig = field(default_factory=BoostingConfig)

    @classmethod
    def before_issue_23(cls) -> Recipe:
        """The code path of the bundles before issue 23 (features v1, two learners)."""
        return cls(feature_version=1, boosting=False, guard_calendar=False, balanced=False,
                   cnn_valid_rows=None, fold_workers=1, cnn_calendar=True)


# Below this many feature rows folds train in this process: starting a worker (a fresh
# interpreter importing torch) costs seconds, more than a small fold's training.
PARALLEL_MIN_ROWS = 100_000


def fold_processes(recipe: Recipe, folds: int, rows: int) -> int:
    """How many processes train the folds: recipe.fold_workers when set, else one per usable
    core (affinity and cgroup quota, models.cpu) up to the fold count and what the memory
    limit allows, on data of at least PARALLEL_MIN_ROWS rows."""
    if recipe.fold_workers is not None:
        return max(1, min(recipe.fold_workers, folds))
    if rows < PARALLEL_MIN_ROWS:
        return 1
    return max(1, min(usable_cores(), folds, memory_workers() or folds))


@dataclass(frozen=True)
class Splits:
    valid_start: pd.Timestamp
    test_start: pd.Timestamp
    end: pd.Timestamp


def time_splits(features: FeatureSet, holdout_days: float) -> Splits:
    """Boundaries: test = the last holdout_days, validation = the holdout_days before it."""
    end = features.keys[Col.PERIOD_START].max() + PERIOD
    test_start = end - pd.Timedelta(days=holdout_days)
    return Splits(test_start - pd.Timedelta(days=holdout_days), test_start, end)


def _split(features: FeatureSet, spec: FeatureSpec, start: pd.Timestamp | None,
           stop: pd.Timestamp | None) -> FeatureSet:
    """Anchors in [start, stop); targets at or after `stop` removed."""
    anchor = features.keys[Col.PERIOD_START]
    keep = np.ones(len(features), bool)
    if start is not None:
        keep &= (anchor >= start).to_numpy()
    if stop is not None:
        keep &= (anchor < stop).to_numpy()
    part = features.subset(keep)
    if stop is not None and part.targets is not None:
        targets = part.targets.copy()
        anchors = part.keys[Col.PERIOD_START]
        for i, horizon in enumerate(spec.horizons):
            targets[(anchors + horizon * PERIOD >= stop).to_numpy(), i] = np.nan
        part.targets = targets
    return part


def _require_targets(part: FeatureSet, name: str, holdout_days: float) -> None:
    if part.targets is None or not np.isfinite(part.targets).any():
        raise ValueError(f"the {name} split has no forecast target (holdout_days={holdout_days:g}"
                         "): provide more days of data or lower holdout_days")


def all_forecasts(forecaster: Forecaster, features: FeatureSet) -> dict[str, np.ndarray]:
    """(n, H) forecasts of every model and baseline, keyed by table name. ElasticNet's and
    the CNN's are those serving gives: where a calendar input lies outside the forecaster's
    training ranges, the trees' (Forecaster.predict's guard)."""
    horizons = forecaster.spec.horizons
    out: dict[str, np.ndarray] = {"elasticnet": forecaster.elasticnet.predict(features)}
    out["cnn"] = forecaster.cnn.predict(features) if forecaster.cnn is not None else \
        np.full_like(out["elasticnet"], np.nan)
    if forecaster.hgb is not None:
        out["hgb"] = forecaster.hgb.predict(features)
    for name in BASELINES:
        out[name] = np.stack([baseline_forecast(name, features, h) for h in horizons], axis=1)
    if forecaster.ranges:
        outside, _ = outside_calendar(features, forecaster.ranges)
        guard(out, outside, calendar_free(features, horizons, out.get("hgb")),
              calendar_readers(forecaster.cnn, forecaster.elasticnet.names))
    return out


def _rows(features: FeatureSet, start: pd.Timestamp | None, stop: pd.Timestamp) -> np.ndarray:
    anchor = features.keys[Col.PERIOD_START]
    keep = (anchor < stop).to_numpy()
    if start is not None:
        keep = keep & (anchor >= start).to_numpy()
    return np.flatnonzero(keep)


def _scored(forecaster: Forecaster, part: FeatureSet, rows: np.ndarray) -> Scored:
    assert part.targets is not None
    return Scored(all_forecasts(forecaster, part), part.targets, part.current,
                  part.keys[Col.SERVICE_TYPE].to_numpy(), rows,
                  part.keys[Col.PERIOD_START].dt.tz_convert("UTC").dt.tz_localize(None)
                  .to_numpy("datetime64[ns]"))


def fit_models(train_part: FeatureSet, valid_part: FeatureSet, spec: FeatureSpec,
               params: TrainSettings, recipe: Recipe, say: Callable[[str], None],
               ) -> tuple[Forecaster, dict[str, float]]:
    """ElasticNet, the CNN ensemble and (recipe) the trees and the training ranges, trained on
    `train_part` (early stopping on `valid_part`); served choice and blend left empty."""
    clock = time.perf_counter()
    timings: dict[str, float] = {}
    elasticnet = train_elasticnet(train_part, spec.horizons, ElasticNetConfig(
        alpha=params.elasticnet_alpha, l1_ratio=params.elasticnet_l1_ratio))
    timings["elasticnet_seconds"] = time.perf_counter() - clock
    cnn_clock = time.perf_counter()
    cnn_config = CNNConfig(channels=params.cnn_channels, epochs=params.cnn_epochs,
                           learning_rate=params.cnn_learning_rate, patience=params.cnn_patience,
                           batch_size=params.cnn_batch_size, seed=params.seed,
                           max_train_rows=params.cnn_max_train_rows,
                           max_valid_rows=recipe.cnn_valid_rows, calendar=recipe.cnn_calendar)
    cnn = train_cnn_ensemble(train_part, valid_part, spec.horizons, cnn_config,
                             params.cnn_seeds, progress=say)
    timings["cnn_seconds"] = time.perf_counter() - cnn_clock
    hgb = None
    if recipe.boosting:
        hgb_clock = time.perf_counter()
        hgb = train_boosting(train_part, valid_part, spec.horizons,
                             replace(recipe.boosting_config, seed=params.seed))
        timings["hgb_seconds"] = time.perf_counter() - hgb_clock
        say(f"boosted trees: {[len(f.roots) if f else 0 for f in hgb.fits]} trees per horizon "
            f"({timings['hgb_seconds']:.1f}s)")
    ranges = feature_ranges(train_part) if recipe.guard_calendar else {}
    return Forecaster(spec=spec, elasticnet=elasticnet, cnn=cnn, served={}, hgb=hgb,
                      ranges=ranges), timings


def _fit_fold(features: FeatureSet, spec: FeatureSpec, fold: Fold, params: TrainSettings,
              recipe: Recipe, say: Callable[[str], None]
              ) -> tuple[FoldResult, Forecaster, dict[str, float]]:
    """Train the models on the fold's training days; score both splits."""
    clock = time.perf_counter()
    train_part = _split(features, spec, None, fold.valid_start)
    valid_part = _split(features, spec, fold.valid_start, fold.test_start)
    for part, name in ((train_part, "train"), (valid_part, "validation")):
        _require_targets(part, f"{name} ({fold.name})", params.holdout_days)
    forecaster, timings = fit_models(train_part, valid_part, spec, params, recipe, say)
    del train_part
    valid = _scored(forecaster, valid_part, _rows(features, fold.valid_start, fold.test_start))
    test_part = _split(features, spec, fold.test_start, fold.test_end)
    test = _scored(forecaster, test_part, _rows(features, fold.test_start, fold.test_end))
    blend = choose_blend(valid.forecasts, valid.actual, spec.horizons)
    add_blend(valid.forecasts, blend, spec.horizons)
    add_blend(test.forecasts, blend, spec.horizons)
    seconds = time.perf_counter() - clock
    say(f"fold {fold.name}: trained in {seconds:.1f}s (elasticnet "
        f"{timings['elasticnet_seconds']:.1f}s, {params.cnn_seeds} CNN(s) "
        f"{timings['cnn_seconds']:.1f}s, trees {timings.get('hgb_seconds', 0.0):.1f}s); "
        f"blend on its validation day {describe_weights(blend)}")
    return FoldResult(fold, valid, test, blend, seconds), forecaster, timings


def run_backtest(features: FeatureSet, spec: FeatureSpec, params: TrainSettings,
                 say: Callable[[str], None], recipe: Recipe | None = None,
                 ) -> tuple[Backtest, Forecaster, dict[str, float]]:
    """Every fold trained and scored; returns the backtest and the last fold's forecaster."""
    timezone = city_timezone(params.city, params.city_id, params.timezone)
    folds = make_folds(features.keys[Col.PERIOD_START], timezone, params.holdout_days,
                       params.backtest_folds)
    if not folds:
        raise ValueError(f"the data holds too few calendar days in {timezone} for one fold "
                         f"(training, validation and test days; holdout_days="
                         f"{params.holdout_days:g}): provide more days of data or lower "
                         "holdout_days")
    recipe = recipe or Recipe()
    results: list[FoldResult] = []
    timings = {"elasticnet_seconds": 0.0, "cnn_seconds": 0.0, "hgb_seconds": 0.0}
    forecaster = None
    workers = fold_processes(recipe, len(folds), len(features))
    if workers > 1:
        results, forecaster, spent_all = _parallel_folds(features, spec, folds, params, recipe,
                                                         timezone, say, workers)
        for spent in spent_all:
            for name, value in spent.items():
                timings[name] = timings.get(name, 0.0) + value
    for fold in folds if forecaster is None else []:
        say("fold " + fold.describe(timezone))
        forecaster = None  # the previous fold's models are not needed any more
        result, forecaster, spent = _fit_fold(features, spec, fold, params, recipe, say)
        results.append(result)
        for name, value in spent.items():
            timings[name] += value
    assert forecaster is not None
    walk_forward(results, spec.horizons, timezone if recipe.balanced else None)
    return Backtest(results, spec.horizons, timezone), forecaster, timings


_ARRAYS = ("tabular", "sequence", "current", "targets")


def _worker_threads(threads: int) -> None:
    """Worker initialiser: the process's share of the cores for torch and OpenMP
    (models.cpu.training_threads reads it), so workers together never oversubscribe."""
    import os

    os.environ["OMP_NUM_THREADS"] = str(threads)


def _fold_worker(directory: str, spec: FeatureSpec, fold: Fold, params: TrainSettings,
                 recipe: Recipe, keep: bool) -> tuple[FoldResult, dict[str, float]]:
    """One fold in a worker process: features mapped from `directory`; with `keep`, the
    fold's models are saved to `directory`/<fold> (torch modules do not pickle)."""
    root = Path(directory)
    arrays = {name: np.load(root / f"{name}.npy", mmap_mode="r") for name in _ARRAYS
              if (root / f"{name}.npy").exists()}
    names = (root / "names.txt").read_text().split("\n")
    features = FeatureSet(pd.read_pickle(root / "keys.pkl"), arrays["tabular"], names,
                          arrays["sequence"], arrays["current"], arrays.get("targets"))
    result, forecaster, timings = _fit_fold(features, spec, fold, params, recipe,
                                            lambda _: None)
    if keep:
        forecaster.save(root / "bundle")
    return result, timings


def _parallel_folds(features: FeatureSet, spec: FeatureSpec, folds: list[Fold],
                    params: TrainSettings, recipe: Recipe, timezone: str,
                    say: Callable[[str], None], workers: int,
                    ) -> tuple[list[FoldResult], Forecaster, list[dict[str, float]]]:
    """Every fold in `workers` spawned processes, the costliest (latest) first; each worker
    trains on its share of the usable cores."""
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    with tempfile.TemporaryDirectory(prefix="pulsar-folds-") as directory:
        root = Path(directory)
        for name in _ARRAYS:
            value = getattr(features, name)
            if value is not None:
                np.save(root / f"{name}.npy", value)
        features.keys.to_pickle(root / "keys.pkl")  # our own file, read back by our workers
        (root / "names.txt").write_text("\n".join(features.tabular_names))
        context = multiprocessing.get_context("spawn")  # no fork of a process holding torch
        threads = max(1, usable_cores() // workers)
        say(f"folds in {workers} worker processes, {threads} thread(s) each")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_threads,
                                 initargs=(threads,)) as pool:
            jobs = {pool.submit(_fold_worker, directory, spec, fold, params, recipe,
                                fold is folds[-1]): fold for fold in reversed(folds)}
            done: dict[str, tuple[FoldResult, dict[str, float]]] = {}
            for job, fold in jobs.items():
                done[fold.name] = job.result()
                say(f"fold {fold.describe(timezone)}: trained in "
                    f"{done[fold.name][0].seconds:.1f}s (worker process)")
        forecaster = Forecaster.load(root / "bundle")
    results = [done[fold.name][0] for fold in folds]
    return results, forecaster, [done[fold.name][1] for fold in folds]


def train_forecaster(snapshots: pd.DataFrame, params: TrainSettings, *,
                     progress: Callable[[str], None] | None = None,
                     recipe: Recipe | None = None, features: FeatureSet | None = None,
                     ) -> tuple[Forecaster, BacktestedReport]:
    """Train the models, choose the served model per horizon on validation, score on test.
    `features`: already built from `snapshots` with this recipe's spec (benchmarks reuse them)."""
    say = progress or log.info
    recipe = recipe or Recipe()
    spec = replace(FeatureSpec.for_minutes(params.horizons_minutes, params.window),
                   version=recipe.feature_version)
    started = time.perf_counter()
    if features is None:
        features = build_features(snapshots, spec)
    timings = {"features_seconds": time.perf_counter() - started}
    say(f"features: {len(features)} rows x {features.tabular.shape[1]} tabular, window "
        f"{spec.window} ({timings['features_seconds']:.1f}s)")
    backtest, forecaster, spent = run_backtest(features, spec, params, say, recipe)
    timings |= spent
    last = backtest.results[-1]
    served = dict(last.served)
    overrides = backtest.losing_horizons()
    for horizon, why in overrides.items():
        served[horizon] = f"baseline:{last.baseline[horizon]}"
        say(f"{horizon * 7.5:g}m: serving baseline {last.baseline[horizon]} (chosen on "
            f"validation), not {last.served[horizon]}: {why}")
    forecaster.served, forecaster.blend = served, last.blend
    say("served per horizon (chosen on the validation days): " + ", ".join(
        f"{m:g}m={served[h]}" for h, m in zip(spec.horizons, spec.horizon_minutes, strict=True)))
    report = BacktestedReport.of(evaluate(last.test.forecasts, last.test.actual,
                                          last.test.current, spec.horizons, served,
                                          split="test"), backtest)
    valid_report = evaluate(last.valid.forecasts, last.valid.actual, last.valid.current,
                            spec.horizons, served, split="validation")
    timings["total_seconds"] = time.perf_counter() - started
    timings["peak_rss_mb"] = peak_rss_mb()
    forecaster.metadata = _metadata(forecaster, valid_report, report, backtest, timings,
                                    overrides, features)
    return forecaster, report


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux ru_maxrss is in KiB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _metadata(forecaster: Forecaster, valid: EvaluationReport, test: EvaluationReport,
              backtest: Backtest, timings: dict[str, float], overrides: dict[int, str],
              features: FeatureSet) -> dict[str, object]:
    valid_mae = {}
    for horizon, minutes in zip(forecaster.spec.horizons, forecaster.spec.horizon_minutes,
                                strict=True):
        row = valid.row(minutes, "served")
        if row.evaluable:
            valid_mae[str(horizon)] = float(row.mae)
    fold = backtest.results[-1].fold
    cnn = forecaster.cnn
    return {
        "pulsar_core_version": pulsar_core.__version__,
        "bundle_format": pulsar_core.BUNDLE_FORMAT_VERSION,
        "scope": "one model across all service types (service type is a feature)",
        "timezone": backtest.timezone,
        "data_start": str(features.keys[Col.PERIOD_START].min()),
        "data_end": str(fold.test_end),
        "valid_start": str(fold.valid_start),
        "test_start": str(fold.test_start),
        "test_window": fold.describe(backtest.timezone),
        "rows": {"features": len(features), "validation": len(backtest.results[-1].valid.actual),
                 "test": len(backtest.results[-1].test.actual)},
        "cnn_members": len(getattr(cnn, "members", [cnn])) if cnn is not None else 0,
        "hgb_trees": [len(f.roots) if f is not None else 0 for f in forecaster.hgb.fits]
        if forecaster.hgb is not None else [],
        "feature_version": forecaster.spec.version,
        # the predictor refuses cells of other resolutions: this model never saw them
        "h3_resolutions": resolutions(features.keys[Col.HEXAGON].to_numpy()),
        # the predictor's live buffer: cells far from these are refused, their series are
        # never evicted by new ones (a flood of foreign cells cannot push them out)
        "trained_cells": sorted(int(c) for c in features.keys[Col.HEXAGON].unique()),
        "trained_service_types": sorted(int(s) for s in features.keys[Col.SERVICE_TYPE].unique()),
        "served": {f"{m:g}": forecaster.served[h] for h, m in
                   zip(forecaster.spec.horizons, forecaster.spec.horizon_minutes, strict=True)},
        "served_overrides": {f"{h * 7.5:g}": why for h, why in overrides.items()},
        "blend": {str(h): w for h, w in forecaster.blend.items()},
        "valid_mae_served": valid_mae,
        "validation": valid.to_dict(),
        "test": test.to_dict(),
        "backtest": backtest.to_dict(),
        "timings": timings,
    }
