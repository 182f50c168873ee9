"""A seed ensemble of temporal CNNs: the mean of members trained alike but for the seed.

One CNN's accuracy on an unseen day varies with its seed as much as between model families
(issue 11: 7.5-minute MAE 55-77 across four trainings); averaging a few members cancels much of
that variance at a cost linear in the member count.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pulsar_core.features import FeatureSet
from pulsar_core.models.cnn import CNNModel, train_cnn
from pulsar_core.models.config import CNNConfig


class CNNEnsemble:
    """Members' mean forecast; the same interface as CNNModel (predict, state, history)."""

    def __init__(self, members: list[CNNModel]) -> None:
        if not members:
            raise ValueError("a CNN ensemble needs at least one member")
        self.members = members
        self.horizons = members[0].horizons

    @property
    def network(self) -> Any:
        """The first member's torch module (a fault in any member reaches the mean)."""
        return self.members[0].network

    @property
    def trained(self) -> list[bool]:
        return self.members[0].trained

    @property
    def history(self) -> list[dict[str, float]]:
        """Every member's epochs, each tagged with its seed."""
        return [{**row, "seed": float(m.config.seed)} for m in self.members for row in m.history]

    def predict(self, features: FeatureSet) -> np.ndarray:
        return np.asarray(np.mean([member.predict(features) for member in self.members], axis=0))

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        metas: list[dict[str, Any]] = []
        arrays: dict[str, np.ndarray] = {}
        for i, member in enumerate(self.members):
            meta, tensors = member.state()
            metas.append(meta)
            arrays |= {f"m{i}.{name}": value for name, value in tensors.items()}
        return {"members": metas}, arrays


def load_cnn(meta: dict[str, Any], state: dict[str, Any], sequence_channels: int,
             tabular_features: int) -> CNNEnsemble:
    """An ensemble from its state; a single-CNN bundle (no "members") loads as one member."""
    if "members" not in meta:
        return CNNEnsemble([CNNModel.from_state(meta, state, sequence_channels,
                                                tabular_features)])
    members = []
    for i, member_meta in enumerate(meta["members"]):
        prefix = f"m{i}."
        tensors = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        members.append(CNNModel.from_state(member_meta, tensors, sequence_channels,
                                           tabular_features))
    return CNNEnsemble(members)


def train_cnn_ensemble(train: FeatureSet, valid: FeatureSet, horizons: tuple[int, ...],
                       config: CNNConfig, seeds: int,
                       progress: Callable[[str], None] | None = None) -> CNNEnsemble:
    """`seeds` members with seeds config.seed, config.seed + 1, ...; config.max_train_rows is
    the ensemble's budget, split between the members, each drawing its own seeded sample (a
    bagged ensemble: more members cost no more rows, only less data per member)."""
    members = []
    share = max(1, config.max_train_rows // seeds)
    for k in range(seeds):
        member_config = dataclasses.replace(config, seed=config.seed + k, max_train_rows=share)
        started = time.perf_counter()
        member = train_cnn(train, valid, horizons, member_config)
        members.append(member)
        if progress and member.history:
            best = min(row["valid_mae"] for row in member.history)
            progress(f"cnn seed {member_config.seed}: {len(member.history)} epochs, best "
                     f"validation MAE {best:.2f} ({time.perf_counter() - started:.1f}s)")
    return CNNEnsemble(members)
