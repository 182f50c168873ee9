"""The Forecaster: both models, the feature spec and the served choice per horizon, as one unit.

Bundles are JSON + a torch state_dict + an .npz: no pickles. One model is trained across all
service types (service type is a feature). A served choice per horizon is "elasticnet", "cnn"
(a seed ensemble), "blend" (convex weights of ElasticNet, the CNN and phase_mean per horizon,
in `blend`; models.blend) or "baseline:<name>".
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

import pulsar_core
from pulsar_core.contract import PERIOD, ForecastCol
from pulsar_core.evaluation import direction, served_label
from pulsar_core.fallback import CNN_CHOICES, NOT_ASKED, Fallback, apply_fallback
from pulsar_core.features import SEQUENCE_CHANNELS, FeatureSet, FeatureSpec, build_features
from pulsar_core.models.baselines import baseline_forecast
from pulsar_core.models.blend import Weights, as_weights, combine
from pulsar_core.models.cnn import CNNModel
from pulsar_core.models.elasticnet import ElasticNetModel
from pulsar_core.models.ensemble import CNNEnsemble, load_cnn
from pulsar_core.models.explain import explain

log = logging.getLogger(__name__)
BUNDLE_JSON = "forecaster.json"
T = TypeVar("T")
_DIRECTIONS = np.array(["down", "flat", "up"], dtype=object)
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


@dataclass
class Forecaster:
    spec: FeatureSpec
    elasticnet: ElasticNetModel
    cnn: CNNEnsemble | CNNModel | None
    served: dict[int, str]
    metadata: dict[str, Any] = field(default_factory=dict)
    blend: dict[int, Weights] = field(default_factory=dict)  # per horizon

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
        if not self.spec.horizons:
            return ForecastResult(pd.DataFrame(columns=[c.value for c in ForecastCol]), cnn_error)
        valid_mae = self.metadata.get("valid_mae_served", {})
        blocks = [self._block(features, i, *self._served_value(features, i, linear, cnn),
                              valid_mae.get(str(horizon)))
                  for i, horizon in enumerate(self.spec.horizons)]
        frame = self._frame(features, blocks)
        if not use_cnn or cnn_error is not None:
            frame = apply_fallback(frame, fallback, self.cnn_minutes(),
                                   cnn_error or skipped_because)
        return ForecastResult(frame=frame, cnn_error=cnn_error)

    def cnn_minutes(self) -> list[float]:
        """Horizons (minutes) served with the CNN, alone or in the blend."""
        return [float(minutes) for horizon, minutes in zip(self.spec.horizons,
                                                           self.spec.horizon_minutes, strict=True)
                if self.served.get(horizon) in CNN_CHOICES]

    def served_forecasts(self, features: FeatureSet) -> np.ndarray:
        """(n, H) served values (as the API answers them), for scoring a version on rows."""
        linear = self.elasticnet.predict(features)
        cnn, _ = self._cnn_forecast(features, True)
        return np.stack([self._served_value(features, i, linear, cnn)[0]
                         for i in range(len(self.spec.horizons))], axis=1)

    def _served_value(self, features: FeatureSet, index: int, linear: np.ndarray,
                      cnn: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
                    members = {"elasticnet": linear[:, index], "cnn": mixed}
                    if "phase_mean" in weights:
                        members["phase_mean"] = baseline_forecast("phase_mean", features, horizon)
                    mixed = combine(members, weights)
                ok = np.isfinite(cnn[:, index]) & np.isfinite(mixed)
                value[ok] = mixed[ok]
                label[ok] = choice
            return value, label
        if choice == "elasticnet":
            return linear[:, index], label
        return baseline_forecast(served_label(choice), features, horizon), label

    def _block(self, features: FeatureSet, index: int, value: np.ndarray, label: np.ndarray,
               mae: float | None) -> dict[str, np.ndarray]:
        """The per-horizon columns of the forecast frame, as arrays."""
        minutes = self.spec.horizon_minutes[index]
        current = features.current
        change = 100 * (value - current) / np.maximum(np.abs(current), 1.0)
        explanation = explain(self.elasticnet.contributions(features, index),
                              self.elasticnet.names, change, minutes,
                              features.column("rising_periods"))
        baseline = np.char.startswith(label.astype(str), "baseline:")
        if baseline.any():
            reason = ("it beat the learned models on validation" if mae is not None else
                      "no validation target spans this horizon")
            explanation[baseline] = [
                f"{pct:+d}% in {minutes:g} min: {name} answers ({reason})"
                for pct, name in zip(np.round(change[baseline]).astype(int).tolist(),
                                     label[baseline].tolist(), strict=True)]
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
        document = {
            "bundle_format": pulsar_core.BUNDLE_FORMAT_VERSION,
            "pulsar_core_version": pulsar_core.__version__,
            "spec": self.spec.to_dict(),
            "served": {str(h): m for h, m in self.served.items()},
            "blend": {str(h): w for h, w in self.blend.items()},
            "elasticnet": en_meta,
            "cnn": cnn_meta,
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
        return cls(spec=FeatureSpec.from_dict(document["spec"]), elasticnet=elasticnet, cnn=cnn,
                   served={int(h): m for h, m in document["served"].items()},
                   metadata=document.get("metadata", {}),
                   blend={int(h): as_weights(w) for h, w in document.get("blend", {}).items()})

