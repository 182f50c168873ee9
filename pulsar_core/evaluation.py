"""Per-horizon evaluation of forecasts against the baselines, on the same rows.

Direction: a change counts as flat when |change| < max(1 unit, 5% of current demand)
(DEAD_BAND_*), else up/down; directional accuracy is the share of rows where the forecast's
direction (forecast - current) equals the actual direction (actual - current), 3 classes.
Coverage is the number of rows where the target and every compared forecast exist; a horizon
with zero such rows is "not evaluable": NaN metrics, never an invented number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pulsar_core.contract import PERIOD_MINUTES
from pulsar_core.gate import HorizonScore

DEAD_BAND_PCT = 5.0
DEAD_BAND_UNITS = 1.0
LEARNED = ("elasticnet", "cnn", "hgb", "blend")
BASELINE_NAMES = ("persistence", "same_phase", "seasonal_naive", "series_mean", "phase_mean")
COLUMNS = ["horizon_minutes", "model", "mae", "rmse", "directional_accuracy", "coverage",
           "evaluable"]


def direction(change: np.ndarray, current: np.ndarray) -> np.ndarray:
    """+1 up, -1 down, 0 flat (inside the dead-band)."""
    band = np.maximum(DEAD_BAND_UNITS, np.abs(current) * DEAD_BAND_PCT / 100)
    return np.where(np.abs(change) < band, 0, np.sign(change)).astype(np.int8)


def _metrics(predicted: np.ndarray, actual: np.ndarray, current: np.ndarray) -> dict[str, float]:
    if not len(actual):
        return {"mae": math.nan, "rmse": math.nan, "directional_accuracy": math.nan}
    error = predicted - actual
    agree = direction(predicted - current, current) == direction(actual - current, current)
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean())),
            "directional_accuracy": float(agree.mean())}


def served_label(choice: str) -> str:
    """Table name of a served choice: "baseline:same_phase" -> "same_phase"."""
    return choice.split(":", 1)[1] if choice.startswith("baseline:") else choice


@dataclass
class EvaluationReport:
    """Per-horizon metrics of every model on one split (rows: horizon x model)."""

    table: pd.DataFrame
    served: dict[float, str]
    split: str = "test"
    samples: dict[float, np.ndarray] = field(default_factory=dict, repr=False)

    def row(self, horizon_minutes: float, model: str) -> pd.Series:
        t = self.table
        match = t[(t.horizon_minutes == horizon_minutes) & (t.model == model)]
        if match.empty:
            raise KeyError(f"no row for model {model!r} at {horizon_minutes:g} min")
        return match.iloc[0]

    def best_baseline(self, horizon_minutes: float) -> tuple[str, float]:
        """(name, MAE) of the strongest simple baseline at one horizon."""
        t = self.table
        rows = t[(t.horizon_minutes == horizon_minutes) & t.model.isin(BASELINE_NAMES)]
        rows = rows[np.isfinite(rows.mae)]
        if rows.empty:
            return "", math.nan
        best = rows.loc[rows.mae.idxmin()]
        return str(best.model), float(best.mae)

    def gate_scores(self) -> dict[float, HorizonScore]:
        """The gate's inputs: served MAE, persistence MAE, strongest-baseline MAE, coverage."""
        scores: dict[float, HorizonScore] = {}
        for horizon in sorted(self.table.horizon_minutes.unique()):
            served = self.row(horizon, "served")
            evaluable = bool(served.evaluable)
            _, best = self.best_baseline(horizon)
            scores[float(horizon)] = HorizonScore(
                horizon_minutes=float(horizon),
                mae=float(served.mae) if evaluable else None,
                persistence_mae=float(self.row(horizon, "persistence").mae) if evaluable else None,
                baseline_mae=best if evaluable else None,
                coverage=int(served.coverage),
            )
        return scores

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metric names like mae_30m_served; only evaluable values."""
        out: dict[str, float] = {}
        for rec in self.table.itertuples():
            if not rec.evaluable:
                continue
            tag = f"{rec.horizon_minutes:g}m_{rec.model}"
            out[f"mae_{tag}"] = float(rec.mae)
            out[f"rmse_{tag}"] = float(rec.rmse)
            out[f"diracc_{tag}"] = float(rec.directional_accuracy)
            out[f"coverage_{rec.horizon_minutes:g}m"] = float(rec.coverage)
        for horizon, score in self.gate_scores().items():
            if score.skill is not None:
                out[f"skill_{horizon:g}m_served"] = score.skill
        return out

    def format_table(self) -> str:
        """The per-horizon table the CLI prints, with served / strongest-baseline ratios."""
        lines = [f"{'horizon':>8} {'model':<15} {'MAE':>8} {'RMSE':>8} {'dir.acc':>7} "
                 f"{'vs best':>8} {'coverage':>8}"]
        for horizon in sorted(self.table.horizon_minutes.unique()):
            name, best = self.best_baseline(horizon)
            rows = self.table[self.table.horizon_minutes == horizon]
            if not rows.evaluable.any():
                lines.append(f"{horizon:>7g}m not evaluable: no target period in this split")
                continue
            for rec in rows.itertuples():
                ratio = rec.mae / best if best and np.isfinite(rec.mae) else math.nan
                label = rec.model
                if rec.model == "served":
                    label = f"served={served_label(self.served.get(horizon, '?'))}"
                lines.append(f"{horizon:>7g}m {label:<15} {rec.mae:8.2f} {rec.rmse:8.2f} "
                             f"{rec.directional_accuracy:7.3f} {ratio:8.3f} {rec.coverage:8d}")
            lines.append(f"{'':>8} strongest baseline: {name} (MAE {best:.2f})")
        lines.append(f"direction dead-band: |change| < max({DEAD_BAND_UNITS:g}, "
                     f"{DEAD_BAND_PCT:g}% of current) is flat; split: {self.split}")
        return "\n".join(lines)

    def plot_forecast_vs_actual(self, path: Path) -> None:
        """Scatter of served forecast vs actual per evaluable horizon (matplotlib, Agg)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        horizons = [h for h, s in sorted(self.samples.items()) if len(s)]
        fig, axes = plt.subplots(1, max(1, len(horizons)), figsize=(4.5 * max(1, len(horizons)), 4))
        for ax, horizon in zip(np.atleast_1d(axes), horizons, strict=False):
            actual, predicted = self.samples[horizon][:, 0], self.samples[horizon][:, 1]
            ax.scatter(actual, predicted, s=3, alpha=0.3)
            top = float(max(actual.max(), predicted.max(), 1.0))
            ax.plot([0, top], [0, top], color="black", linewidth=0.8)
            ax.set_title(f"{horizon:g} min ({served_label(self.served.get(horizon, '?'))})")
            ax.set_xlabel("actual demand_signal")
            ax.set_ylabel("forecast")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)

    def to_dict(self) -> dict[str, Any]:
        records = self.table.astype(object).where(self.table.notna(), None).to_dict("records")
        return {"split": self.split, "served": {f"{h:g}": m for h, m in self.served.items()},
                "table": records}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        table = pd.DataFrame(data["table"], columns=COLUMNS)
        for name in ("mae", "rmse", "directional_accuracy"):
            table[name] = table[name].astype(float)
        table["coverage"] = table["coverage"].astype(int)
        table["evaluable"] = table["evaluable"].astype(bool)
        table["horizon_minutes"] = table["horizon_minutes"].astype(float)
        return cls(table=table, served={float(h): m for h, m in data["served"].items()},
                   split=data.get("split", "test"))


def evaluate(predictions: dict[str, np.ndarray], actual: np.ndarray, current: np.ndarray,
             horizons: tuple[int, ...], served: dict[int, str], *, split: str = "test",
             sample_size: int = 3000, seed: int = 0) -> EvaluationReport:
    """Score (n, H) forecasts per model; "served" is assembled from `served` per horizon.

    Models whose forecasts are all NaN at a horizon (not trained there) are reported with
    coverage 0 and excluded from the common rows.
    """
    records: list[dict[str, Any]] = []
    samples: dict[float, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    for i, horizon in enumerate(horizons):
        minutes = horizon * PERIOD_MINUTES
        per_model = {name: p[:, i] for name, p in predictions.items()}
        choice = served.get(horizon, "baseline:persistence")
        per_model["served"] = per_model[served_label(choice)]
        compared = [n for n, p in per_model.items() if np.isfinite(p).any()]
        rows = np.isfinite(actual[:, i])
        for name in compared:
            rows &= np.isfinite(per_model[name])
        coverage = int(rows.sum())
        for name, forecast in per_model.items():
            ok = coverage > 0 and name in compared
            scores = _metrics(forecast[rows], actual[rows, i], current[rows]) if ok else \
                _metrics(np.empty(0), np.empty(0), np.empty(0))
            records.append({"horizon_minutes": minutes, "model": name, **scores,
                            "coverage": coverage if ok else 0, "evaluable": ok})
        if coverage:
            picked = rng.permutation(np.flatnonzero(rows))[:sample_size]
            samples[minutes] = np.stack([actual[picked, i], per_model["served"][picked]], axis=1)
    table = pd.DataFrame.from_records(records, columns=COLUMNS)
    return EvaluationReport(table=table, split=split, samples=samples,
                            served={h * PERIOD_MINUTES: served.get(h, "baseline:persistence")
                                    for h in horizons})


def choose_served(report: EvaluationReport, horizons: tuple[int, ...], *,
                  baselines_only: bool = False) -> dict[int, str]:
    """Per horizon, the lowest-MAE model on (validation) `report`; persistence if none scored.
    `baselines_only`: the strongest simple baseline on validation (never chosen on test)."""
    choice: dict[int, str] = {}
    for horizon in horizons:
        rows = report.table[(report.table.horizon_minutes == horizon * PERIOD_MINUTES)
                            & report.table.evaluable & (report.table.model != "served")]
        if baselines_only:
            rows = rows[rows.model.isin(BASELINE_NAMES)]
        if rows.empty:
            choice[horizon] = "baseline:persistence"
            continue
        best = str(rows.loc[rows.mae.idxmin()].model)
        choice[horizon] = best if best in LEARNED else f"baseline:{best}"
    return choice
