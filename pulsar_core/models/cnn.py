"""Temporal CNN: 1-D convolutions over the gap-masked window, a tabular side input, and one
output per horizon. The network outputs log1p(demand) (positive, stable), and is trained with an
L1 loss on demand itself: L1 targets the conditional median, the forecast that minimises MAE.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pulsar_core.features import CALENDAR_FEATURES, FeatureSet
from pulsar_core.models.config import CNNConfig
from pulsar_core.models.cpu import torch_threads, training_threads

log = logging.getLogger(__name__)
_LOSS_SCALE = 100.0  # demand units per loss unit
_OPTIONAL_BUFFERS = ("tab_low", "tab_high")


def _torch() -> Any:
    import torch

    return torch


def build_network(sequence_channels: int, tabular_features: int, horizons: int,
                  config: CNNConfig) -> Any:
    """The torch module; buffers hold the tabular standardisation so state_dict is complete."""
    torch = _torch()
    nn = torch.nn

    class TemporalCNN(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            width = config.channels
            self.conv = nn.Sequential(
                nn.Conv1d(sequence_channels, width, kernel_size=3, padding=1), nn.ReLU(),
                nn.Conv1d(width, width, kernel_size=3, padding=2, dilation=2), nn.ReLU(),
                nn.Conv1d(width, width, kernel_size=3, padding=4, dilation=4), nn.ReLU(),
            )
            self.tabular = nn.Sequential(nn.Linear(tabular_features, config.hidden), nn.ReLU())
            self.head = nn.Sequential(
                nn.Linear(2 * width + config.hidden, config.hidden), nn.ReLU(),
                nn.Linear(config.hidden, horizons),
            )
            self.register_buffer("tab_mean", torch.zeros(tabular_features))
            self.register_buffer("tab_scale", torch.ones(tabular_features))
            self.register_buffer("tab_low", torch.full((tabular_features,), -math.inf))
            self.register_buffer("tab_high", torch.full((tabular_features,), math.inf))

        def forward(self, sequence: Any, tabular: Any) -> Any:
            hidden = self.conv(sequence.transpose(1, 2))  # (n, width, window)
            mask = sequence[:, :, 2].unsqueeze(1)  # the observed channel
            pooled = (hidden * mask).sum(2) / mask.sum(2).clamp(min=1.0)
            last = hidden[:, :, -1]
            squashed = torch.sign(tabular) * torch.log1p(tabular.abs())  # heavy tails
            # Never extrapolate: a feature almost constant in training (time of day when every
            # training day had the same session) would otherwise reach z-scores of 100+.
            squashed = torch.clamp(squashed, self.tab_low, self.tab_high)
            side = self.tabular((squashed - self.tab_mean) / self.tab_scale)
            return self.head(torch.cat([last, pooled, side], dim=1))

    return TemporalCNN()


def pick_device(name: str = "auto") -> str:
    """CPU by default; CUDA when present and not disabled."""
    if name != "auto":
        return name
    return "cuda" if _torch().cuda.is_available() else "cpu"


class CNNModel:
    """A trained temporal CNN plus what it needs to predict."""

    def __init__(self, network: Any, horizons: tuple[int, ...], config: CNNConfig) -> None:
        self.network = network
        self.horizons = horizons
        self.config = config
        self.history: list[dict[str, float]] = []
        self.trained = [True] * len(horizons)  # False where training had no target

    def predict(self, features: FeatureSet, batch_size: int = 8192) -> np.ndarray:
        """(n, horizons) demand forecasts."""
        torch = _torch()
        self.network.eval()
        device = next(self.network.parameters()).device
        outputs = []
        with torch.no_grad():
            for start in range(0, len(features), batch_size):
                seq = torch.from_numpy(features.sequence[start:start + batch_size]).to(device)
                tab = torch.from_numpy(features.tabular[start:start + batch_size]).to(device)
                outputs.append(self.network(seq, tab).float().cpu().numpy())
        raw = np.concatenate(outputs) if outputs else np.empty((0, len(self.horizons)))
        forecast = np.expm1(np.clip(raw.astype(np.float64), -20, 8)).clip(min=0.0)
        forecast[:, ~np.asarray(self.trained, bool)] = np.nan
        return forecast

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able description, state_dict as numpy arrays)."""
        meta = {"horizons": list(self.horizons), "config": self.config.__dict__,
                "history": self.history, "trained": self.trained}
        arrays = {k: v.detach().cpu().numpy() for k, v in self.network.state_dict().items()}
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], state: dict[str, Any],
                   sequence_channels: int, tabular_features: int) -> CNNModel:
        torch = _torch()
        config = CNNConfig(**meta["config"])
        network = build_network(sequence_channels, tabular_features, len(meta["horizons"]), config)
        tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}
        for name in _OPTIONAL_BUFFERS:  # bundles from before the input range was stored
            tensors.setdefault(name, getattr(network, name))
        network.load_state_dict(tensors)
        model = cls(network, tuple(meta["horizons"]), config)
        model.history = list(meta.get("history", []))
        model.trained = [bool(t) for t in meta.get("trained", model.trained)]
        return model


def _fit_standardisation(network: Any, tabular: np.ndarray) -> None:
    """Mean, scale and range of the squashed tabular inputs (constant columns get scale 1)."""
    torch = _torch()
    squashed = tabular.astype(np.float64)
    squashed = np.sign(squashed) * np.log1p(np.abs(squashed))
    std = squashed.std(0)
    for name, values in (("tab_mean", squashed.mean(0)),
                         ("tab_scale", np.where(std > 1e-6, std, 1.0)),
                         ("tab_low", squashed.min(0)), ("tab_high", squashed.max(0))):
        getattr(network, name).copy_(torch.as_tensor(values, dtype=torch.float32))


def _pin(network: Any, columns: list[int]) -> None:
    """The input clamp of `columns` narrowed to their training mean: whatever they hold, the
    network reads a constant (zero after standardisation), in training and in serving."""
    for column in columns:
        network.tab_low[column] = network.tab_mean[column]
        network.tab_high[column] = network.tab_mean[column]


def reads_calendar(model: Any, names: list[str]) -> bool:
    """Whether a CNN (or every member of an ensemble) can be steered by a calendar input:
    false where each calendar column's input clamp is a single value."""
    members = getattr(model, "members", [model])
    columns = [i for i, name in enumerate(names) if name in CALENDAR_FEATURES]
    return any(bool((m.network.tab_low[columns] < m.network.tab_high[columns]).any())
               for m in members) if columns else False


def _start_at_the_median(network: Any, targets: np.ndarray) -> None:
    """Output bias = log1p(median target) per horizon: the first epoch starts from a sane level
    instead of climbing from expm1(0) = 0 (slow, and it wastes the early-stopping budget)."""
    torch = _torch()
    present = np.isfinite(targets)
    medians = [float(np.median(targets[present[:, i], i])) if present[:, i].any() else 0.0
               for i in range(targets.shape[1])]
    with torch.no_grad():
        network.head[-1].bias.copy_(torch.as_tensor(np.log1p(np.maximum(medians, 0.0))))


def _masked_l1(torch: Any, predicted: Any, target: Any) -> Any:
    present = torch.isfinite(target)
    diff = (predicted - torch.nan_to_num(target)).abs() * present
    return diff.sum() / present.sum().clamp(min=1)


def train_cnn(train: FeatureSet, valid: FeatureSet, horizons: tuple[int, ...],
              config: CNNConfig, progress: Callable[[str], None] | None = None) -> CNNModel:
    """Fit with early stopping on the (time-ordered) validation split's MAE."""
    torch = _torch()
    device = pick_device(config.device)
    threads = training_threads() if device == "cpu" else torch.get_num_threads()
    with torch_threads(torch, threads):
        return _fit(train, valid, horizons, config, device, progress)


def _fit(train: FeatureSet, valid: FeatureSet, horizons: tuple[int, ...], config: CNNConfig,
         device: str, progress: Callable[[str], None] | None) -> CNNModel:
    torch = _torch()
    torch.manual_seed(config.seed)
    assert train.targets is not None and valid.targets is not None
    rows = _training_rows(train.targets, config)
    if config.max_valid_rows is not None and len(valid) > config.max_valid_rows:
        picked = np.random.default_rng(0).choice(len(valid), config.max_valid_rows,
                                                 replace=False)
        valid = valid.subset(np.sort(picked))
    network = build_network(train.sequence.shape[2], train.tabular.shape[1], len(horizons),
                            config)
    _fit_standardisation(network, train.tabular[rows])
    if not config.calendar:
        _pin(network, [i for i, name in enumerate(train.tabular_names)
                       if name in CALENDAR_FEATURES])
    _start_at_the_median(network, train.targets[rows])
    network.to(device)
    seq_t = torch.from_numpy(train.sequence[rows]).to(device)
    tab_t = torch.from_numpy(train.tabular[rows]).to(device)
    tgt_t = torch.from_numpy(train.targets[rows].astype(np.float32) / _LOSS_SCALE).to(device)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    steps = math.ceil(len(rows) / config.batch_size)
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.3, patience=1)
    model = CNNModel(network, horizons, config)
    model.trained = [bool(t) for t in np.isfinite(train.targets[rows]).any(axis=0)]
    best, best_state, waited = math.inf, copy.deepcopy(network.state_dict()), 0
    for epoch in range(config.epochs):
        started = time.perf_counter()
        network.train()
        order = torch.randperm(len(rows), device=device)
        total = 0.0
        for step in range(steps):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            forecast = torch.expm1(network(seq_t[batch], tab_t[batch]).clamp(-20, 8))
            loss = _masked_l1(torch, forecast / _LOSS_SCALE, tgt_t[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item()
        score = _validation_mae(model, valid)
        schedule.step(score)
        model.history.append({"epoch": epoch + 1, "train_l1": total / steps,
                              "valid_mae": score, "seconds": time.perf_counter() - started})
        if progress:
            progress(f"cnn epoch {epoch + 1}/{config.epochs}: train L1/100 {total / steps:.4f}, "
                     f"valid MAE {score:.2f} ({model.history[-1]['seconds']:.1f}s)")
        if score < best - 1e-4:
            best, best_state, waited = score, copy.deepcopy(network.state_dict()), 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    network.load_state_dict(best_state)
    network.to("cpu")
    return model


def _training_rows(targets: np.ndarray, config: CNNConfig) -> np.ndarray:
    """Rows with any target, a seeded sample of max_train_rows of them when there are more."""
    rows = np.flatnonzero(np.isfinite(targets).any(axis=1))
    if len(rows) > config.max_train_rows:
        log.info("CNN: subsampling %d of %d training rows", config.max_train_rows, len(rows))
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(rows, config.max_train_rows, replace=False))
    return rows


def _validation_mae(model: CNNModel, valid: FeatureSet) -> float:
    """Mean over horizons of the MAE where targets exist (inf when none do)."""
    assert valid.targets is not None
    if not len(valid) or not np.isfinite(valid.targets).any():
        return math.inf
    errors = np.abs(model.predict(valid) - valid.targets)
    per_horizon = [np.nanmean(errors[:, i]) for i in range(errors.shape[1])
                   if np.isfinite(errors[:, i]).any()]
    return float(np.mean(per_horizon))
