"""The Forecaster: both models, the feature spec and the served choice per horizon, as one unit.

Bundles are JSON + a torch state_dict + an .npz: no pickles. One model is trained across all
service types (service type is a feature). A served choice per horizon is "elasticnet", "cnn"
(a seed ensemble), "hgb" (gradient-boosted trees, no calendar inputs), "blend" (convex weights
of ElasticNet, the CNN, the trees and phase_mean per horizon, in `blend`; models.blend) or
"baseline:<name>".

Out-of-range guard (issue 23): the bundle records each tabular feature's training range
(`ranges`); a series whose calendar features (features.CALENDAR_FEATURES: an hour or weekday
the training data never held) lie outside it gets the trees' forecast in place of ElasticNet's
(and the CNN's where it reads those features: bundles trained before its calendar inputs were
pinned, models.cnn.reads_calendar), phase_mean's where there are no trees. The rows are
counted in ForecastResult.outside_range and said in the explanation.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

import pulsar_core
from pulsar_core.contract import PERIOD, ForecastCol
from pulsar_core.evaluation import direction, served_label
from pulsar_core.fallback import CNN_CHOICES, NOT_ASKED, Fallback, apply_fallback
from pulsar_core.features import (
    CALENDAR_FEATURES,
    SEQUENCE_CHANNELS,
    FeatureSet,
    FeatureSpec,
    build_features,
)
from pulsar_core.models.baselines import baseline_forecast
from pulsar_core.models.blend import Weights, as_weights, combine
from pulsar_core.models.boosting import BoostedTreesModel
from pulsar_core.models.cnn import CNNModel, reads_calendar
from pulsar_core.models.elasticnet import ElasticNetModel
from pulsar_core.models.ensemble import CNNEnsemble, load_cnn
from pulsar_core.models.explain import explain

log = logging.getLogger(__name__)
BUNDLE_JSON = "forecaster.json"
T = TypeVar("T")
_DIRECTIONS = np.array(["down", "flat", "up"], dtype=object)
_WHO = {"hgb": "gradient-boosted trees", "cnn": "the CNN", "blend": "the blend",
        "baseline:phase_mean": "phase_mean"}
_BLOCK_COLUMNS = (ForecastCol.VALUE, ForecastCol.CHANGE_PCT, ForecastCol.DIRECTION,
                  ForecastCol.CONFIDENCE, ForecastCol.MODEL, ForecastCol.EXPLANATION)


class UnreadableBundleFile(ValueError):
    """A file of a saved Forecaster is missing, truncated or corrupt."""


def _read(directory: Path, name: str, read: Callable[[Path], T]) -> T:
    """`read(directory / name)`, any failure named after the file (a truncated cnn.pt
    otherwise says only 'PytorchStreamReader failed reading zip archive')."""
    try:
        return read(directory / name)
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as error:
        detail = str(error).split(". ", 1)[0][:160]
        raise UnreadableBundleFile(
            f"{name} in {directory} is missing or damaged ({type(error).__name__}: {detail}); "
            "re-upload the version's artifacts or register a newly trained one") from error


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


@dataclass
class ForecastResult:
    frame: pd.DataFrame
    cnn_error: str | None
    outside_range: int = 0  # series answered without calendar inputs outside their range
    hgb_error: str | None = None


RangeMap = dict[str, tuple[float, float]]
_RANGE_SLACK = 1e-6  # float32 features: equal values must never count as outside


def feature_ranges(features: FeatureSet) -> RangeMap:
    """Each tabular feature's (min, max) over `features` (the training rows)."""
    if not len(features):
        return {}
    low, high = features.tabular.min(axis=0), features.tabular.max(axis=0)
    return {name: (float(lo), float(hi)) for name, lo, hi in
            zip(features.tabular_names, low.tolist(), high.tolist(), strict=True)}


def outside_calendar(features: FeatureSet, ranges: RangeMap) -> tuple[np.ndarray, list[str]]:
    """(rows whose calendar features lie outside `ranges`, those features' names)."""
    outside = np.zeros(len(features), bool)
    names = []
    for name in CALENDAR_FEATURES:
        if name not in ranges or name not in features.tabular_names:
            continue
        low, high = ranges[name]
        value = features.column(name)
        bad = (value < low - _RANGE_SLACK) | (value > high + _RANGE_SLACK)
        if bad.any():
            outside |= bad
            names.append(name)
    return outside, names


def calendar_free(features: FeatureSet, horizons: tuple[int, ...],
                  trees: np.ndarray | None) -> np.ndarray:
    """(n, H) forecasts that read no calendar feature: the trees', phase_mean's where the
    trees have none (no trees in the bundle, or none trained at that horizon)."""
    phase_mean = np.stack([baseline_forecast("phase_mean", features, h) for h in horizons],
                          axis=1)
    return phase_mean if trees is None else np.where(np.isfinite(trees), trees, phase_mean)


def calendar_readers(cnn: CNNEnsemble | CNNModel | None, names: list[str]) -> tuple[str, ...]:
    """The models a calendar input steers: ElasticNet, and the CNN unless it was trained with
    those inputs pinned (CNNConfig.calendar)."""
    return ("elasticnet", "cnn") if cnn is not None and reads_calendar(cnn, names) else \
        ("elasticnet",)


def guard(forecasts: dict[str, np.ndarray], outside: np.ndarray,
          fallback: np.ndarray, readers: tuple[str, ...]) -> None:
    """In place: rows `outside` of the models that read calendar features (`readers`)
    answered by `fallback` (the trees, which do not), so any blend of them leans on what stays
    valid."""
    if not outside.any():
        return
    for name in readers:
        if name in forecasts:
            values = forecasts[name]
            swap = outside[:, None] & np.isfinite(values) & np.isfinite(fallback)
            values[swap] = fallback[swap]


@dataclass
class Forecaster:
    spec: FeatureSpec
    elasticnet: ElasticNetModel
    cnn: CNNEnsemble | CNNModel | None
    served: dict[int, str]
    metadata: dict[str, Any] = field(default_factory=dict)
    blend: dict[int, Weights] = field(default_factory=dict)  # per horizon
    hgb: BoostedTreesModel | None = None
    ranges: RangeMap = field(default_factory=dict)  # tabular feature -> training (min, max)

    def _hgb_forecast(self, features: FeatureSet) -> tuple[np.ndarray | None, str | None]:
        if self.hgb is None:
            return None, None
        try:
            forecast = np.asarray(self.hgb.predict(features), dtype=np.float64)
        except Exception as exc:  # the trees failing must degrade to ElasticNet, never fail
            log.warning("boosted trees failed, ElasticNet answers: %s", exc, exc_info=True)
            return None, f"{type(exc).__name__}: {exc}"
        return forecast, None

    def _guarded(self, features: FeatureSet, linear: np.ndarray, cnn: np.ndarray | None,
                 trees: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
        """Rows outside the calendar range; there ElasticNet's and the CNN's forecasts are
        replaced in place by the trees' (phase_mean's where there are none)."""
        outside, names = outside_calendar(features, self.ranges)
        if outside.any():
            members = {"elasticnet": linear} | ({"cnn": cnn} if cnn is not None else {})
            guard(members, outside, calendar_free(features, self.spec.horizons, trees),
                  self._readers)
        return outside, names

    @cached_property
    def _readers(self) -> tuple[str, ...]:
        return calendar_readers(self.cnn, self.elasticnet.names)

    def _cnn_forecast(self, features: FeatureSet, use_cnn: bool) -> tuple[np.ndarray | None,
                                                                          str | None]:
        uses_cnn = set(CNN_CHOICES) & set(self.served.values())
        if not use_cnn or self.cnn is None or not uses_cnn:
            return None, None
        try:
            forecast = np.asarray(self.cnn.predict(features), dtype=np.float64)
        except Exception as exc:  # any CNN failure must degrade to ElasticNet, never fail
            log.warning("CNN failed, ElasticNet answers: %s", exc, exc_info=True)
            return None, f"{type(exc).__name__}: {exc}"
        if forecast.shape != (len(features), len(self.spec.horizons)):
            return None, f"CNN returned shape {forecast.shape}, expected " \
                         f"{(len(features), len(self.spec.horizons))}"
        served_cnn = [i for i, h in enumerate(self.spec.horizons)
                      if self.served.get(h) in CNN_CHOICES]
        bad = ~np.isfinite(forecast[:, served_cnn])
        if bad.any():
            return forecast, f"CNN returned {int(bad.sum())} non-finite values; ElasticNet " \
                             "answered those"
        return forecast, None

    def predict(self, snapshots: pd.DataFrame, *, use_cnn: bool = True,
                fallback: Fallback = Fallback.ELASTICNET,
                skipped_because: str = NOT_ASKED) -> ForecastResult:
        """One row per series x horizon at each series' last period (contract.ForecastCol).
        Where the CNN should answer and does not (it failed, or `use_cnn` is off for
        `skipped_because`), `fallback` decides who does; Fallback.NONE raises CnnUnavailable."""
        features = build_features(snapshots, self.spec, targets=False, last_only=True)
        linear = self.elasticnet.predict(features)
        cnn, cnn_error = self._cnn_forecast(features, use_cnn)
        trees, hgb_error = self._hgb_forecast(features)
        if not self.spec.horizons:
            return ForecastResult(pd.DataFrame(columns=[c.value for c in ForecastCol]), cnn_error)
        outside, names = self._guarded(features, linear, cnn, trees)
        valid_mae = self.metadata.get("valid_mae_served", {})
        blocks = [self._block(features, i, *self._served_value(features, i, linear, cnn, trees),
                              valid_mae.get(str(horizon)), outside, names,
                              trees is not None and bool(np.isfinite(trees[:, i]).any()))
                  for i, horizon in enumerate(self.spec.horizons)]
        frame = self._frame(features, blocks)
        if not use_cnn or cnn_error is not None:
            frame = apply_fallback(frame, fallback, self.cnn_minutes(),
                                   cnn_error or skipped_because)
        return ForecastResult(frame=frame, cnn_error=cnn_error,
                              outside_range=int(outside.sum()), hgb_error=hgb_error)

    def cnn_minutes(self) -> list[float]:
        """Horizons (minutes) served with the CNN, alone or in the blend."""
        return [float(minutes) for horizon, minutes in zip(self.spec.horizons,
                                                           self.spec.horizon_minutes, strict=True)
                if self.served.get(horizon) in CNN_CHOICES]

    def served_forecasts(self, features: FeatureSet) -> np.ndarray:
        """(n, H) served values (as the API answers them), for scoring a version on rows."""
        linear = self.elasticnet.predict(features)
        cnn, _ = self._cnn_forecast(features, True)
        trees, _ = self._hgb_forecast(features)
        self._guarded(features, linear, cnn, trees)
        return np.stack([self._served_value(features, i, linear, cnn, trees)[0]
                         for i in range(len(self.spec.horizons))], axis=1)

    def _served_value(self, features: FeatureSet, index: int, linear: np.ndarray,
                      cnn: np.ndarray | None, trees: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(value, answering model) at one horizon: the served choice, ElasticNet where the
        CNN gave no finite value."""
        horizon = self.spec.horizons[index]
        choice = self.served.get(horizon, "baseline:persistence")
        label = np.full(len(features), choice, dtype=object)
        if choice in CNN_CHOICES:
            value = linear[:, index].copy()
            label[:] = "elasticnet"
            if cnn is not None:
                mixed = cnn[:, index]
                if choice == "blend":
                    weights = self.blend.get(horizon) or {"cnn": 1.0}
                    members = {"elasticnet": linear[:, index], "cnn": mixed,
                               "hgb": linear[:, index] if trees is None else trees[:, index]}
                    if "phase_mean" in weights:
                        members["phase_mean"] = baseline_forecast("phase_mean", features, horizon)
                    mixed = combine(members, weights)
                ok = np.isfinite(cnn[:, index]) & np.isfinite(mixed)
                value[ok] = mixed[ok]
                label[ok] = choice
            return value, label
        if choice == "elasticnet":
            return linear[:, index], label
        if choice == "hgb":
            ok = np.zeros(len(features), bool) if trees is None else np.isfinite(trees[:, index])
            label[~ok] = "elasticnet"  # the trees failed or were not trained at this horizon
            return (np.where(ok, np.nan_to_num(trees[:, index]), linear[:, index])
                    if trees is not None else linear[:, index].copy()), label
        return baseline_forecast(served_label(choice), features, horizon), label

    def _block(self, features: FeatureSet, index: int, value: np.ndarray, label: np.ndarray,
               mae: float | None, outside: np.ndarray | None = None,
               outside_names: list[str] | None = None, trees: bool = False
               ) -> dict[str, np.ndarray]:
        """The per-horizon columns of the forecast frame, as arrays."""
        minutes = self.spec.horizon_minutes[index]
        current = features.current
        change = 100 * (value - current) / np.maximum(np.abs(current), 1.0)
        baseline = np.char.startswith(label.astype(str), "baseline:")
        guarded = np.zeros(len(value), bool) if outside is None else outside & ~baseline
        if guarded.any():
            model = np.where(np.isin(label.astype(str), self._readers),
                             "hgb" if trees else "baseline:phase_mean", label)
            label[guarded] = model[guarded]
        explanation = self._explain(features, index, change, (label == "hgb") |
                                    (guarded & trees))
        if baseline.any():
            reason = ("it beat the learned models on validation" if mae is not None else
                      "no validation target spans this horizon")
            explanation[baseline] = [
                f"{pct:+d}% in {minutes:g} min: {name} answers ({reason})"
                for pct, name in zip(np.round(change[baseline]).astype(int).tolist(),
                                     label[baseline].tolist(), strict=True)]
        if guarded.any():
            why = f"without the time of day ({', '.join(outside_names or [])} outside the " \
                  "training range)"
            explanation[guarded] = [
                f"{text}; {_WHO.get(who, who)} answers {why}" for text, who in
                zip(explanation[guarded].tolist(), label[guarded].tolist(), strict=True)]
        confidence = (np.abs(value) / (np.abs(value) + mae)) if mae else np.zeros(len(value))
        return {
            ForecastCol.HORIZON_MINUTES: np.full(len(value), float(minutes)),
            ForecastCol.VALUE: value,
            ForecastCol.CHANGE_PCT: change,
            ForecastCol.DIRECTION: _DIRECTIONS[direction(value - current, current) + 1],
            ForecastCol.CONFIDENCE: np.clip(confidence, 0.0, 1.0),
            ForecastCol.MODEL: label,
            ForecastCol.EXPLANATION: explanation,
        }

    def _explain(self, features: FeatureSet, index: int, change: np.ndarray,
                 by_trees: np.ndarray) -> np.ndarray:
        """The drivers of each row's forecast: the trees' own credits where they answer (bundles
        whose trees hold node means), ElasticNet's elsewhere."""
        minutes = self.spec.horizon_minutes[index]
        explanation = explain(self.elasticnet.contributions(features, index),
                              self.elasticnet.names, change, minutes,
                              features.column("rising_periods"))
        if self.hgb is not None and by_trees.any():
            part = features.subset(by_trees)
            credits = self.hgb.contributions(part, index)
            if credits is not None:
                explanation[by_trees] = explain(credits, self.hgb.names, change[by_trees],
                                                minutes, part.column("rising_periods"))
        return explanation

    def _frame(self, features: FeatureSet, blocks: list[dict[str, np.ndarray]]
               ) -> pd.DataFrame:
        """All horizons in one frame, built once (per-horizon frames + concat cost more)."""
        repeat = len(blocks)
        anchors = features.keys["period_start"]
        steps = np.repeat(np.asarray(self.spec.horizons, dtype=np.int64), len(features))
        issued = pd.DatetimeIndex(np.tile(anchors.to_numpy(dtype="datetime64[ns]"), repeat),
                                  tz="UTC")
        column = {name: np.concatenate([block[name] for block in blocks]) for name in blocks[0]}
        return pd.DataFrame({
            ForecastCol.HEXAGON: np.tile(features.keys["hexagon"].to_numpy(), repeat),
            ForecastCol.SERVICE_TYPE: np.tile(features.keys["service_type"].to_numpy(), repeat),
            ForecastCol.ISSUED_FOR: issued,
            ForecastCol.HORIZON_MINUTES: column[ForecastCol.HORIZON_MINUTES],
            ForecastCol.TARGET_PERIOD_START: issued + pd.to_timedelta(steps * PERIOD.value),
            ForecastCol.CURRENT: np.tile(features.current, repeat),
            **{name: column[name] for name in _BLOCK_COLUMNS},
        })

    def save(self, directory: Path) -> None:
        """forecaster.json + elasticnet.npz + cnn.pt (a torch state_dict)."""
        import torch

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        en_meta, en_arrays = self.elasticnet.state()
        np.savez(directory / "elasticnet.npz", **en_arrays)  # type: ignore[arg-type]  # numpy stubs: **arrays typed as allow_pickle
        cnn_meta = None
        if self.cnn is not None:
            cnn_meta, cnn_arrays = self.cnn.state()
            torch.save({k: torch.from_numpy(v) for k, v in cnn_arrays.items()},
                       directory / "cnn.pt")
        hgb_meta = None
        if self.hgb is not None:
            hgb_meta, hgb_arrays = self.hgb.state()
            np.savez(directory / "hgb.npz", **hgb_arrays)  # type: ignore[arg-type]  # numpy stubs: **arrays typed as allow_pickle
        document = {
            "bundle_format": pulsar_core.BUNDLE_FORMAT_VERSION,
            "pulsar_core_version": pulsar_core.__version__,
            "spec": self.spec.to_dict(),
            "served": {str(h): m for h, m in self.served.items()},
            "blend": {str(h): w for h, w in self.blend.items()},
            "elasticnet": en_meta,
            "cnn": cnn_meta,
            "hgb": hgb_meta,
            "feature_ranges": {name: list(bounds) for name, bounds in self.ranges.items()},
            "sequence_channels": list(SEQUENCE_CHANNELS),
            "metadata": self.metadata,
        }
        (directory / BUNDLE_JSON).write_text(json.dumps(document, indent=2, default=str))

    @classmethod
    def load(cls, directory: Path) -> Forecaster:
        """Inverse of save(); refuses a bundle of another major format."""
        import torch

        directory = Path(directory)
        document = _read(directory, BUNDLE_JSON, lambda path: json.loads(path.read_text()))
        if document.get("bundle_format") != pulsar_core.BUNDLE_FORMAT_VERSION:
            raise ValueError(f"bundle format {document.get('bundle_format')} in {directory} is "
                             f"not {pulsar_core.BUNDLE_FORMAT_VERSION}: retrain the model")
        arrays = _read(directory, "elasticnet.npz", _npz)
        elasticnet = ElasticNetModel.from_state(document["elasticnet"], arrays)
        cnn = None
        if document.get("cnn") is not None:
            state = _read(directory, "cnn.pt", lambda path: torch.load(
                path, map_location="cpu", weights_only=True))
            cnn = load_cnn(document["cnn"], state, len(document["sequence_channels"]),
                           len(elasticnet.names))
        hgb = None
        if document.get("hgb") is not None:  # bundles before issue 23 have no trees
            hgb = BoostedTreesModel.from_state(document["hgb"], _read(directory, "hgb.npz", _npz))
        ranges = {str(name): (float(b[0]), float(b[1]))
                  for name, b in document.get("feature_ranges", {}).items()}
        return cls(spec=FeatureSpec.from_dict(document["spec"]), elasticnet=elasticnet, cnn=cnn,
                   served={int(h): m for h, m in document["served"].items()},
                   metadata=document.get("metadata", {}),
                   blend={int(h): as_weights(w) for h, w in document.get("blend", {}).items()},
                   hgb=hgb, ranges=ranges)

