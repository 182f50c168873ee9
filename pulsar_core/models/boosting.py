"""Gradient-boosted trees (scikit-learn's HistGradientBoostingRegressor) per horizon.

The third learner beside ElasticNet and the CNN (issue 23). It is fitted on log1p(demand) with
the absolute-error loss (the median in log space is the median of demand: the forecast that
minimises MAE), on the tabular features minus the calendar ones (CALENDAR_FEATURES): trees
split on where an input lies, so a time of day never seen in training would land in whichever
leaf the nearest seen hour had. Without them the model stays valid at any hour, and it is the
answer the Forecaster falls back to where a calendar input lies outside its training range.
Early stopping watches the time-ordered validation split, never a random share of training rows.

Bundles hold no pickles: each tree is stored as flat node arrays in an .npz and evaluated by
`predict` in numpy (tests check it against scikit-learn's own predict).

`contributions` splits a forecast between the features the way a path through each tree does:
every node holds the mean of its leaves weighted by their training rows (`mean`), and a split
moves the forecast by the child's mean minus its own, credited to the split's feature. The
credits and the roots' means sum to the prediction, so a row the trees answer is explained by
the trees' own reasons (models.explain), not ElasticNet's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from pulsar_core.features import CALENDAR_FEATURES, FeatureSet
from pulsar_core.models.config import BoostingConfig
from pulsar_core.models.cpu import training_threads

log = logging.getLogger(__name__)
_FIELDS = ("feature", "threshold", "missing_left", "left", "right", "leaf", "value")
_OPTIONAL = ("mean",)  # bundles whose trees were saved before contributions lack it


@dataclass
class _Trees:
    """Every tree of one horizon as flat node arrays; `roots` index each tree's first node."""

    feature: np.ndarray  # int32, -1 at leaves
    threshold: np.ndarray  # float64: go left where x <= threshold
    missing_left: np.ndarray  # bool: NaN goes left
    left: np.ndarray  # int32 node index (global)
    right: np.ndarray
    leaf: np.ndarray  # bool
    value: np.ndarray  # float64 leaf values (already scaled by the learning rate)
    roots: np.ndarray  # int32
    baseline: float
    depth: int
    mean: np.ndarray | None = None  # float64 per node: its leaves' row-weighted mean value

    @cached_property
    def _walk(self) -> tuple[np.ndarray, ...]:
        """Per node: feature, threshold, left, right and the NaN child, with every leaf its own
        child (feature 0, threshold +inf), so each level is one branch-free step."""
        own = np.arange(len(self.value), dtype=np.intp)
        left = np.where(self.leaf, own, self.left).astype(np.intp)
        right = np.where(self.leaf, own, self.right).astype(np.intp)
        return (np.where(self.leaf, 0, self.feature).astype(np.intp),
                np.where(self.leaf, np.inf, self.threshold), left, right,
                np.where(self.missing_left, left, right), self.roots.astype(np.intp))

    def _descend(self, block: np.ndarray, offsets: np.ndarray, node: np.ndarray) -> np.ndarray:
        """Every tree's node one level down for each row of `block` (leaves stay)."""
        feature, threshold, left, right, missing, _ = self._walk
        value = block.ravel().take(offsets + feature.take(node))
        step = np.where(value <= threshold.take(node), left.take(node), right.take(node))
        absent = np.isnan(value)
        return np.where(absent, missing.take(node), step) if absent.any() else step

    def _blocks(self, x: np.ndarray, chunk_rows: int
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """(start, rows, flat offsets, every tree's root per row) per chunk of `x`."""
        roots = self._walk[-1]
        for start in range(0, len(x), chunk_rows):
            block = np.ascontiguousarray(x[start:start + chunk_rows], dtype=np.float64)
            offsets = (np.arange(len(block), dtype=np.intp) * block.shape[1])[:, None]
            yield start, block, offsets, np.broadcast_to(roots, (len(block), len(roots))).copy()

    def predict(self, x: np.ndarray, chunk_rows: int = 512) -> np.ndarray:
        """Raw (log-space) predictions: baseline + the sum of the trees' leaf values."""
        out = np.full(len(x), self.baseline)
        if not len(self.roots):
            return out
        for start, block, offsets, node in self._blocks(x, chunk_rows):
            for _ in range(self.depth):
                node = self._descend(block, offsets, node)
            out[start:start + len(block)] += self.value.take(node).sum(axis=1)
        return out

    def contributions(self, x: np.ndarray, chunk_rows: int = 512) -> np.ndarray | None:
        """(n, features) log-space credits per feature (see the module's docstring); they sum
        to predict(x) minus `expected`. None for trees saved without node means."""
        if self.mean is None:
            return None
        out = np.zeros(x.shape)
        features = self._walk[0]
        for start, block, offsets, node in self._blocks(x, chunk_rows):
            credit = np.zeros(block.size)
            for _ in range(self.depth):
                below = self._descend(block, offsets, node)
                credit += np.bincount((offsets + features.take(node)).ravel(),
                                      (self.mean.take(below) - self.mean.take(node)).ravel(),
                                      minlength=block.size)
                node = below
            out[start:start + len(block)] = credit.reshape(block.shape)
        return out

    @property
    def expected(self) -> float:
        """The prediction before any split: the baseline plus every root's mean."""
        assert self.mean is not None
        return self.baseline + float(self.mean.take(self.roots).sum())

    @staticmethod
    def from_sklearn(model: Any) -> _Trees:
        parts: dict[str, list[np.ndarray]] = {name: [] for name in (*_FIELDS, *_OPTIONAL)}
        roots, offset, depth = [], 0, 0
        for (predictor,) in model._predictors:  # one tree per iteration (a single output)
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits are not supported (none are configured)")
            roots.append(offset)
            leaf = nodes["is_leaf"].astype(bool)
            parts["feature"].append(np.where(leaf, -1, nodes["feature_idx"]).astype(np.int32))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
            parts["left"].append(np.where(leaf, 0, nodes["left"] + offset).astype(np.int32))
            parts["right"].append(np.where(leaf, 0, nodes["right"] + offset).astype(np.int32))
            parts["leaf"].append(leaf)
            parts["value"].append(nodes["value"].astype(np.float64))
            parts["mean"].append(_node_means(nodes))
            depth = max(depth, int(nodes["depth"].max()))
            offset += len(nodes)
        arrays = {name: (np.concatenate(values) if values else np.empty(0))
                  for name, values in parts.items()}
        return _Trees(arrays["feature"].astype(np.int32), arrays["threshold"],
                      arrays["missing_left"].astype(bool), arrays["left"].astype(np.int32),
                      arrays["right"].astype(np.int32), arrays["leaf"].astype(bool),
                      arrays["value"], np.asarray(roots, np.int32),
                      float(np.ravel(model._baseline_prediction)[0]), depth, arrays["mean"])

    @staticmethod
    def average(parts: list[_Trees]) -> _Trees:
        """One ensemble whose prediction is the mean of `parts`' (bagging): every tree kept,
        leaf values and baselines divided by their count."""
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p.value) for p in parts[:-1]])
        k = float(len(parts))

        def joined(name: str, shift: bool = False) -> np.ndarray:
            return np.concatenate([getattr(p, name) + o if shift else getattr(p, name)
                                   for p, o in zip(parts, offsets, strict=True)])

        leaf = joined("leaf")
        left, right = joined("left", True), joined("right", True)
        return _Trees(joined("feature"), joined("threshold"), joined("missing_left"),
                      np.where(leaf, 0, left).astype(np.int32),
                      np.where(leaf, 0, right).astype(np.int32), leaf, joined("value") / k,
                      joined("roots", True).astype(np.int32),
                      float(np.mean([p.baseline for p in parts])), max(p.depth for p in parts),
                      None if any(p.mean is None for p in parts) else joined("mean") / k)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.{name}": getattr(self, name) for name in _FIELDS}
        if self.mean is not None:
            out[f"{prefix}.mean"] = self.mean
        return out | {f"{prefix}.roots": self.roots}

    @staticmethod
    def from_arrays(prefix: str, arrays: dict[str, np.ndarray], baseline: float,
                    depth: int) -> _Trees:
        get = {name: np.asarray(arrays[f"{prefix}.{name}"]) for name in (*_FIELDS, "roots")}
        return _Trees(get["feature"].astype(np.int32), get["threshold"].astype(np.float64),
                      get["missing_left"].astype(bool), get["left"].astype(np.int32),
                      get["right"].astype(np.int32), get["leaf"].astype(bool),
                      get["value"].astype(np.float64), get["roots"].astype(np.int32),
                      baseline, depth, np.asarray(arrays[f"{prefix}.mean"], np.float64)
                      if f"{prefix}.mean" in arrays else None)


def _node_means(nodes: np.ndarray) -> np.ndarray:
    """Each node's leaves' values averaged with their training row counts. Children follow
    their parent in scikit-learn's node order, so one backward pass fills every parent."""
    mean = nodes["value"].astype(np.float64)
    count = nodes["count"].astype(np.float64)
    for i in range(len(nodes) - 1, -1, -1):
        if not nodes["is_leaf"][i]:
            left, right = int(nodes["left"][i]), int(nodes["right"][i])
            total = count[left] + count[right]
            mean[i] = ((mean[left] * count[left] + mean[right] * count[right]) / total
                       if total else 0.0)
    return mean


class BoostedTreesModel:
    """One tree ensemble per horizon (None where training had no target at that horizon)."""

    def __init__(self, horizons: tuple[int, ...], names: list[str],
                 fits: list[_Trees | None], config: BoostingConfig) -> None:
        self.horizons = horizons
        self.names = names  # the tabular features it reads, in its column order
        self.fits = fits
        self.config = config
        self._columns: tuple[list[str], np.ndarray] | None = None

    def _inputs(self, features: FeatureSet) -> np.ndarray:
        if self._columns is None or self._columns[0] is not features.tabular_names:
            index = {name: i for i, name in enumerate(features.tabular_names)}
            missing = [n for n in self.names if n not in index]
            if missing:
                raise ValueError(f"boosted trees need feature(s) {missing[:5]} the FeatureSet "
                                 "lacks: rebuild it with the bundle's FeatureSpec")
            self._columns = (features.tabular_names,
                             np.asarray([index[n] for n in self.names], np.int64))
        return np.asarray(features.tabular[:, self._columns[1]], dtype=np.float64)

    def predict(self, features: FeatureSet) -> np.ndarray:
        """(n, horizons) demand forecasts; NaN for horizons without a fitted model."""
        x = self._inputs(features)
        out = np.full((len(features), len(self.horizons)), np.nan)
        for i, fit in enumerate(self.fits):
            if fit is not None:
                out[:, i] = np.expm1(np.clip(fit.predict(x), -20, 20)).clip(min=0)
        return out

    def contributions(self, features: FeatureSet, horizon_index: int) -> np.ndarray | None:
        """(n, len(names)) log-space credits of each feature to one horizon's forecast; None
        where that horizon has no trees or they were saved without node means."""
        fit = self.fits[horizon_index]
        return None if fit is None else fit.contributions(self._inputs(features))

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {
            "horizons": list(self.horizons), "names": self.names,
            "config": self.config.__dict__,
            "fits": [None if f is None else {"baseline": f.baseline, "depth": f.depth,
                                             "trees": len(f.roots)} for f in self.fits]}
        arrays: dict[str, np.ndarray] = {}
        for i, fit in enumerate(self.fits):
            if fit is not None:
                arrays |= fit.arrays(f"h{i}")
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> BoostedTreesModel:
        fits = [None if f is None else _Trees.from_arrays(f"h{i}", arrays, float(f["baseline"]),
                                                          int(f["depth"]))
                for i, f in enumerate(meta["fits"])]
        return cls(tuple(int(h) for h in meta["horizons"]), list(meta["names"]), fits,
                   BoostingConfig(**meta.get("config", {})))


def boosting_features(names: list[str]) -> list[str]:
    """The tabular features the trees read: all but the calendar ones."""
    return [n for n in names if n not in CALENDAR_FEATURES]


def _rows(targets: np.ndarray, column: int, limit: int, seed: int) -> np.ndarray:
    rows = np.flatnonzero(np.isfinite(targets[:, column]))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    return rows


def train_boosting(train: FeatureSet, valid: FeatureSet | None, horizons: tuple[int, ...],
                   config: BoostingConfig) -> BoostedTreesModel:
    """Fit one HistGradientBoostingRegressor per horizon on log1p(target); early stopping on
    `valid` where it has targets at that horizon, else a fixed `config.max_iter` rounds.
    With `config.bags` > 1, each horizon averages that many fits on their own seeded row
    samples (bagging: where the inputs leave the training range, single fits disagree)."""
    assert train.targets is not None
    names = boosting_features(list(train.tabular_names))
    model = BoostedTreesModel(horizons, names, [], config)
    columns = np.asarray([train.tabular_names.index(n) for n in names], np.int64)
    x_valid = None if valid is None else valid.tabular[:, columns]
    fits: list[_Trees | None] = []
    for i, horizon in enumerate(horizons):
        bags = []
        for bag in range(config.bags):
            fit = _fit_one(train, x_valid, valid, columns, i, config,
                           config.seed + 1000 * bag + i)
            if fit is None:
                log.info("boosted trees: too few training targets at horizon %d", horizon)
                break
            bags.append(fit)
        fits.append(_Trees.average(bags) if len(bags) == config.bags else None)
    model.fits = fits
    return model


def _fit_one(train: FeatureSet, x_valid: np.ndarray | None, valid: FeatureSet | None,
             columns: np.ndarray, i: int, config: BoostingConfig, seed: int) -> _Trees | None:
    """One regressor at horizon index `i` on a seeded sample of the training rows."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    assert train.targets is not None
    x_all = train.tabular
    rows = _rows(train.targets, i, config.max_train_rows, seed)
    if len(rows) < 2 * config.min_samples_leaf:
        return None
    val: dict[str, Any] = {}
    if valid is not None and valid.targets is not None and x_valid is not None:
        ok = np.flatnonzero(np.isfinite(valid.targets[:, i]))
        if len(ok) >= config.min_samples_leaf:
            ok = ok[:: max(1, len(ok) // config.max_valid_rows)]
            val = {"X_val": x_valid[ok], "y_val": np.log1p(valid.targets[ok, i])}
    regressor = HistGradientBoostingRegressor(
        loss=config.loss, learning_rate=config.learning_rate, max_iter=config.max_iter,
        max_leaf_nodes=config.max_leaf_nodes, max_depth=config.max_depth,
        min_samples_leaf=config.min_samples_leaf, l2_regularization=config.l2,
        max_bins=config.max_bins, early_stopping=bool(val),
        n_iter_no_change=config.patience, random_state=seed)
    # OpenMP workers spinning for a core another process holds cost more than they gain
    # (models.cpu): the same thread policy as the CNN.
    with threadpool_limits(limits=training_threads(), user_api="openmp"):
        regressor.fit(x_all[rows][:, columns], np.log1p(train.targets[rows, i]), **val)
    return _Trees.from_sklearn(regressor)
