"""Rolling-origin backtest: every model and baseline scored per fold, horizon and service type.

Each fold trains ElasticNet, a CNN seed ensemble and boosted trees on the days before its
validation day and scores everything on its test day. The blend weights and the served choice
for fold k are made on the pooled validation days of folds 1..k (walk-forward: never on a test
day, never on a later day); with `balanced`, each local time-of-day band of those days counts
equally, so the least-covered time of day (the one daytime session of the Tehran file, a
validation day from the second fold on) weighs as much as the nights. The table reports the
served model's MAE against each fold's strongest simple baseline on the same rows: the mean
ratio, the worst fold, the spread; `band_table` splits it by time-of-day band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pulsar_core.contract import PERIOD_MINUTES
from pulsar_core.evaluation import (
    BASELINE_NAMES,
    LEARNED,
    EvaluationReport,
    choose_served,
    evaluate,
    served_label,
)
from pulsar_core.folds import Fold, time_of_day_band
from pulsar_core.models.blend import (
    MEMBERS,
    Weights,
    choose_weights,
    combine,
    group_codes,
    group_mean,
)

MAX_WORSE_THAN_BASELINE = 1.02  # a fold may lose to its strongest baseline by 2% at most


@dataclass
class Scored:
    """Forecasts of every model on one split's rows, with what scoring needs."""

    forecasts: dict[str, np.ndarray]
    actual: np.ndarray
    current: np.ndarray
    services: np.ndarray
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # feature rows
    anchors: np.ndarray = field(default_factory=lambda: np.empty(0, "datetime64[ns]"))

    @staticmethod
    def pool(parts: list[Scored]) -> Scored:
        names = [n for n in parts[0].forecasts if all(n in p.forecasts for p in parts)]
        return Scored({n: np.concatenate([p.forecasts[n] for p in parts]) for n in names},
                      np.concatenate([p.actual for p in parts]),
                      np.concatenate([p.current for p in parts]),
                      np.concatenate([p.services for p in parts]),
                      np.concatenate([p.rows for p in parts]),
                      np.concatenate([p.anchors for p in parts]))


@dataclass
class FoldResult:
    fold: Fold
    valid: Scored
    test: Scored
    blend: dict[int, Weights]
    seconds: float
    served: dict[int, str] = field(default_factory=dict)
    baseline: dict[int, str] = field(default_factory=dict)  # chosen on validation
    report: EvaluationReport | None = None


def choose_blend(forecasts: dict[str, np.ndarray], actual: np.ndarray,
                 horizons: tuple[int, ...], groups: np.ndarray | None = None
                 ) -> dict[int, Weights]:
    """Per horizon, the blend weights with the lowest validation MAE (models.blend); with
    `groups`, the lowest mean of per-group MAEs."""
    return {h: choose_weights({n: forecasts[n][:, i] for n in MEMBERS if n in forecasts},
                              actual[:, i], groups) for i, h in enumerate(horizons)}


def choose_served_balanced(scored: Scored, horizons: tuple[int, ...], groups: np.ndarray, *,
                           baselines_only: bool = False) -> dict[int, str]:
    """Per horizon, the model (or baseline) with the lowest mean of per-group MAEs on the rows
    where every compared forecast exists (the validation counterpart of choose_served)."""
    choice: dict[int, str] = {}
    names = [n for n in (*BASELINE_NAMES, *([] if baselines_only else LEARNED))
             if n in scored.forecasts]
    for i, horizon in enumerate(horizons):
        compared = [n for n in names if np.isfinite(scored.forecasts[n][:, i]).any()]
        rows = np.isfinite(scored.actual[:, i])
        for name in compared:
            rows &= np.isfinite(scored.forecasts[name][:, i])
        if not rows.any():
            choice[horizon] = "baseline:persistence"
            continue
        codes = group_codes(groups[rows])
        errors = {n: group_mean(np.abs(scored.forecasts[n][rows, i] - scored.actual[rows, i]),
                                codes) for n in compared}
        best = min(errors, key=lambda n: errors[n])
        choice[horizon] = best if best in LEARNED else f"baseline:{best}"
    return choice


def add_blend(forecasts: dict[str, np.ndarray], weights: dict[int, Weights],
              horizons: tuple[int, ...]) -> None:
    """forecasts["blend"]: the weighted members; ElasticNet where a weighted member is NaN."""
    linear = forecasts["elasticnet"]
    out = linear.copy()
    for i, horizon in enumerate(horizons):
        chosen = weights.get(horizon) or {"elasticnet": 1.0}
        value = combine({n: forecasts[n][:, i] for n in chosen}, chosen)
        out[:, i] = np.where(np.isfinite(value), value, linear[:, i])
    forecasts["blend"] = out


def describe_weights(weights: dict[int, Weights]) -> str:
    return ", ".join(f"{h}: " + "+".join(f"{w:g}*{n}" for n, w in chosen.items())
                     for h, chosen in weights.items())


def walk_forward(results: list[FoldResult], horizons: tuple[int, ...],
                 timezone: str | None = None) -> None:
    """Served model and validation-chosen baseline of each fold from validation days 1..k.

    With `timezone` (balanced), the blend weights of fold k are chosen on those pooled days
    too, and every choice weighs each local time-of-day band equally; without it, the blend
    stays the one chosen on the fold's own validation day and the choice is the plain MAE."""
    for k, result in enumerate(results):
        pooled = Scored.pool([r.valid for r in results[:k + 1]])
        if timezone is not None:
            bands = time_of_day_band(pooled.anchors, timezone)
            result.blend = choose_blend(pooled.forecasts, pooled.actual, horizons, bands)
            for part in (pooled, result.valid, result.test):
                add_blend(part.forecasts, result.blend, horizons)
            result.served = choose_served_balanced(pooled, horizons, bands)
            result.baseline = {h: served_label(c) for h, c in choose_served_balanced(
                pooled, horizons, bands, baselines_only=True).items()}
        else:
            valid = evaluate(pooled.forecasts, pooled.actual, pooled.current, horizons, {},
                             split="validation")
            result.served = choose_served(valid, horizons)
            result.baseline = {h: served_label(c) for h, c in
                               choose_served(valid, horizons, baselines_only=True).items()}
        result.report = evaluate(result.test.forecasts, result.test.actual, result.test.current,
                                 horizons, result.served, split=f"test {result.fold.name}")


@dataclass
class Backtest:
    results: list[FoldResult]
    horizons: tuple[int, ...]
    timezone: str

    def table(self) -> pd.DataFrame:
        """One row per fold x horizon: served and strongest-baseline MAE on the same rows."""
        records: list[dict[str, Any]] = []
        for result in self.results:
            assert result.report is not None
            for horizon in self.horizons:
                minutes = horizon * PERIOD_MINUTES
                served = result.report.row(minutes, "served")
                name, best = result.report.best_baseline(minutes)
                chosen = result.baseline.get(horizon, "persistence")
                rec: dict[str, Any] = {"fold": result.fold.name, "horizon_minutes": minutes,
                                       "served": served_label(result.served.get(horizon, "?")),
                                       "served_mae": float(served.mae), "strongest": name,
                                       "strongest_mae": best, "valid_baseline": chosen,
                                       "rows": int(served.coverage),
                                       "evaluable": bool(served.evaluable)}
                for model in (*LEARNED, chosen):
                    try:
                        mae = float(result.report.row(minutes, model).mae)
                    except KeyError:  # a model this run did not train (no trees before #23)
                        mae = math.nan
                    rec[f"{model}_mae" if model in LEARNED else "valid_baseline_mae"] = mae
                rec["ratio"] = float(served.mae) / best if best else math.nan
                records.append(rec)
        return pd.DataFrame.from_records(records)

    def summary(self) -> pd.DataFrame:
        """Per horizon: mean, worst and spread of the served / strongest-baseline ratio."""
        table = self.table()
        table = table[table.evaluable]
        out = table.groupby("horizon_minutes").ratio.agg(["mean", "max", "min", "std", "count"])
        return out.rename(columns={"max": "worst", "min": "best", "count": "folds"})

    def service_table(self) -> pd.DataFrame:
        """Every model's and baseline's MAE per fold x horizon x service type, on the rows
        where the target and the served forecast exist; `ratio` = served / strongest."""
        records: list[dict[str, Any]] = []
        for result in self.results:
            test = result.test
            for i, horizon in enumerate(self.horizons):
                served = test.forecasts[served_label(result.served[horizon])][:, i]
                for service in np.unique(test.services):
                    rows = (test.services == service) & np.isfinite(test.actual[:, i])
                    rows &= np.isfinite(served)
                    if not rows.any():
                        continue
                    actual = test.actual[rows, i]
                    mae = {n: float(np.abs(f[rows, i] - actual).mean())
                           for n, f in test.forecasts.items()}
                    strongest = min(mae[n] for n in BASELINE_NAMES if n in mae)
                    served_mae = float(np.abs(served[rows] - actual).mean())
                    records.append({"fold": result.fold.name, "service_type": int(service),
                                    "horizon_minutes": horizon * PERIOD_MINUTES,
                                    "rows": int(rows.sum()), "served": served_mae, **mae,
                                    "ratio": served_mae / strongest if strongest else math.nan})
        return pd.DataFrame.from_records(records)

    def band_table(self) -> pd.DataFrame:
        """Served and strongest-baseline MAE per fold x horizon x local time-of-day band (the
        strongest baseline picked per band, on the same rows as the served forecast)."""
        records: list[dict[str, Any]] = []
        for result in self.results:
            test = result.test
            bands = time_of_day_band(test.anchors, self.timezone)
            for i, horizon in enumerate(self.horizons):
                served = test.forecasts[served_label(result.served[horizon])][:, i]
                for band in sorted(set(bands.tolist())):
                    rows = (bands == band) & np.isfinite(test.actual[:, i]) & np.isfinite(served)
                    if not rows.any():
                        continue
                    actual = test.actual[rows, i]
                    base = {n: float(np.abs(test.forecasts[n][rows, i] - actual).mean())
                            for n in BASELINE_NAMES if n in test.forecasts}
                    strongest = min(base, key=lambda n: base[n])
                    served_mae = float(np.abs(served[rows] - actual).mean())
                    records.append({"fold": result.fold.name, "band": band,
                                    "horizon_minutes": horizon * PERIOD_MINUTES,
                                    "rows": int(rows.sum()), "served_mae": served_mae,
                                    "strongest": strongest, "strongest_mae": base[strongest],
                                    "ratio": served_mae / base[strongest]
                                    if base[strongest] else math.nan})
        return pd.DataFrame.from_records(records)

    def format_bands(self) -> str:
        """The fold table by local time-of-day band: served / strongest baseline per horizon."""
        frame = self.band_table()
        if frame.empty:
            return "(no scored rows)"
        ratios = frame.pivot_table(index=["fold", "band"], columns="horizon_minutes",
                                   values="ratio")
        rows = frame.pivot_table(index=["fold", "band"], columns="horizon_minutes",
                                 values="rows", aggfunc="sum")
        ratios.columns = [f"{m:g}m" for m in ratios.columns]
        ratios["rows"] = rows.max(axis=1).astype(int)
        return (f"served / strongest baseline by fold and local time-of-day band "
                f"({self.timezone}):\n" + str(ratios.round(3).to_string()))

    def by_service(self) -> pd.DataFrame:
        """Mean and worst fold of served / strongest-baseline MAE per horizon x service type."""
        frame = self.service_table()
        if frame.empty:
            return frame
        return frame.groupby(["horizon_minutes", "service_type"]).agg(
            mean_ratio=("ratio", "mean"), worst=("ratio", "max"), rows=("rows", "sum"))

    def losing_horizons(self) -> dict[int, str]:
        """Horizons where some fold's served MAE exceeds its strongest baseline by > 2%."""
        table = self.table()
        out: dict[int, str] = {}
        for horizon in self.horizons:
            rows = table[(table.horizon_minutes == horizon * PERIOD_MINUTES) & table.evaluable
                         & (table.ratio > MAX_WORSE_THAN_BASELINE)]
            if not rows.empty:
                out[horizon] = "; ".join(f"fold {r.fold}: {r.served} {r.served_mae:.2f} vs "
                                         f"{r.strongest} {r.strongest_mae:.2f} "
                                         f"(x{r.ratio:.3f})" for r in rows.itertuples())
        return out

    def format(self) -> str:
        """The fold table `pulsar train` and bench_accuracy print."""
        lines = [f"rolling-origin backtest: {len(self.results)} fold(s); day boundaries in "
                 f"{self.timezone}; each fold trains on the days before its validation day"]
        lines += ["  " + r.fold.describe(self.timezone) for r in self.results]
        table = self.table()
        lines.append(f"{'fold':<12} {'horizon':>7} {'served':<14} {'MAE':>7} {'strongest':<15}"
                     f" {'MAE':>7} {'ratio':>6} {'EN':>7} {'CNN':>7} {'HGB':>7} {'blend':>7}"
                     f" {'rows':>6}  baseline chosen on validation")
        for r in table.itertuples():
            if not r.evaluable:
                lines.append(f"{r.fold:<12} {r.horizon_minutes:>6g}m not evaluable "
                             "(no target this far ahead in the fold)")
                continue
            lines.append(f"{r.fold:<12} {r.horizon_minutes:>6g}m {r.served:<14} "
                         f"{r.served_mae:7.2f} {r.strongest:<15} {r.strongest_mae:7.2f} "
                         f"{r.ratio:6.3f} {r.elasticnet_mae:7.2f} {r.cnn_mae:7.2f} "
                         f"{r.hgb_mae:7.2f} {r.blend_mae:7.2f} {r.rows:6d}  "
                         f"{r.valid_baseline} {r.valid_baseline_mae:.2f}")
        lines.append("served / strongest baseline per horizon (mean, worst fold, spread):")
        summary = self.summary()
        for horizon in self.horizons:
            minutes = horizon * PERIOD_MINUTES
            if minutes not in summary.index:
                lines.append(f"  {minutes:>5g}m not evaluable on any fold")
                continue
            s = summary.loc[minutes]
            spread = 0.0 if not np.isfinite(s["std"]) else s["std"]
            lines.append(f"  {minutes:>5g}m mean {s['mean']:.3f}  worst {s['worst']:.3f}  "
                         f"best {s['best']:.3f}  std {spread:.3f}  ({int(s['folds'])} folds)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        table = self.table()
        return {"timezone": self.timezone,
                "folds": [r.fold.to_dict() | {"seconds": r.seconds,
                                              "blend": {str(h): w for h, w in r.blend.items()}}
                          for r in self.results],
                "table": table.astype(object).where(table.notna(), None).to_dict("records")}

    def metrics(self) -> dict[str, float]:
        """backtest_ratio_<h>m_{mean,worst,std} for MLflow."""
        out: dict[str, float] = {"backtest_folds": float(len(self.results))}
        for minutes, s in self.summary().iterrows():
            for name in ("mean", "worst", "std"):
                if np.isfinite(s[name]):
                    out[f"backtest_ratio_{minutes:g}m_{name}"] = float(s[name])
        return out


@dataclass
class BacktestedReport(EvaluationReport):
    """The last fold's test report with the folds behind it (what training hands on)."""

    backtest: Backtest | None = field(default=None, repr=False)

    @classmethod
    def of(cls, report: EvaluationReport, backtest: Backtest) -> BacktestedReport:
        return cls(table=report.table, served=report.served, split=report.split,
                   samples=report.samples, backtest=backtest)
