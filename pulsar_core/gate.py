"""The promotion gate: a pure function shared by the trainer's report, the demo and the operator.

A candidate is compared per evaluable horizon with (a) persistence, by a minimum improvement, and
(b) the strongest simple baseline, which it must not lose to, and (c) the current champion. The
champion comparison uses skill (MAE / strongest-baseline MAE on each version's own test window),
because two versions are evaluated on different, time-ordered test windows: raw MAEs from
different days are not comparable, ratios against the same-day baseline are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

TAG_PREFIX = "pulsar.gate"


@dataclass(frozen=True)
class HorizonScore:
    """Test-split scores of the served model and of the baselines at one horizon."""

    horizon_minutes: float
    mae: float | None
    persistence_mae: float | None
    baseline_mae: float | None  # the strongest simple baseline at this horizon
    coverage: int = 0

    @property
    def evaluable(self) -> bool:
        return self.mae is not None and self.baseline_mae is not None and self.coverage > 0

    @property
    def skill(self) -> float | None:
        """MAE relative to the strongest baseline (lower is better, 1.0 = no skill)."""
        if not self.evaluable or not self.baseline_mae:
            return None
        return float(self.mae) / float(self.baseline_mae)  # type: ignore[arg-type]


Scores = Mapping[float, HorizonScore]


@dataclass(frozen=True)
class PromotionPolicy:
    mode: Literal["auto", "manual"] = "auto"
    min_improvement_over_persistence_pct: float = 5.0
    max_regression_vs_champion_pct: float = 2.0


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str
    awaiting_approval: bool = False
    failures: list[str] = field(default_factory=list)


def _fmt(minutes: float) -> str:
    return f"{minutes:g}m"


def decide(
    candidate: Scores,
    champion: Scores | None,
    policy: PromotionPolicy,
    *,
    approved: bool = False,
) -> GateVerdict:
    """Judge a candidate version. `approved` is the manual approval for this exact version."""
    evaluable = {h: s for h, s in candidate.items() if s.evaluable}
    if not evaluable:
        return GateVerdict(False, "no horizon could be evaluated on the test split")

    failures: list[str] = []
    for horizon, score in sorted(evaluable.items()):
        mae = float(score.mae)  # type: ignore[arg-type]
        if score.persistence_mae:
            needed = score.persistence_mae * (1 - policy.min_improvement_over_persistence_pct / 100)
            if mae > needed:
                gain = 100 * (1 - mae / score.persistence_mae)
                failures.append(
                    f"{_fmt(horizon)}: {gain:.1f}% better than persistence, needs "
                    f"{policy.min_improvement_over_persistence_pct:g}%"
                )
        if score.baseline_mae is not None and mae > float(score.baseline_mae) * 1.000001:
            failures.append(
                f"{_fmt(horizon)}: MAE {mae:.2f} worse than the best baseline "
                f"{score.baseline_mae:.2f}"
            )
        previous = (champion or {}).get(horizon)
        if previous is not None and previous.skill is not None and score.skill is not None:
            allowed = previous.skill * (1 + policy.max_regression_vs_champion_pct / 100)
            if score.skill > allowed:
                failures.append(
                    f"{_fmt(horizon)}: skill {score.skill:.3f} regresses on the champion's "
                    f"{previous.skill:.3f} by more than "
                    f"{policy.max_regression_vs_champion_pct:g}%"
                )
    if failures:
        return GateVerdict(False, "; ".join(failures), failures=failures)
    summary = ", ".join(
        f"{_fmt(h)} MAE {s.mae:.2f} vs baseline {s.baseline_mae:.2f}"
        for h, s in sorted(evaluable.items())
    )
    if policy.mode == "manual" and not approved:
        return GateVerdict(False, f"passed the gate, awaiting manual approval ({summary})", True)
    return GateVerdict(True, f"passed: {summary}")


def scores_to_tags(scores: Scores) -> dict[str, str]:
    """Encode scores as MLflow version tags (the gate's inputs travel with the version)."""
    tags: dict[str, str] = {}
    for horizon, score in scores.items():
        key = f"{TAG_PREFIX}.h{horizon:g}"
        for name in ("mae", "persistence_mae", "baseline_mae"):
            value = getattr(score, name)
            tags[f"{key}.{name}"] = "" if value is None else f"{value:.6g}"
        tags[f"{key}.coverage"] = str(score.coverage)
    return tags


def scores_from_tags(tags: Mapping[str, str]) -> dict[float, HorizonScore]:
    """Inverse of scores_to_tags; ignores unrelated tags."""
    fields: dict[float, dict[str, str]] = {}
    for key, value in tags.items():
        if not key.startswith(f"{TAG_PREFIX}.h"):
            continue
        # rpartition: the horizon itself may hold a dot ("h7.5.mae").
        horizon_part, _, name = key[len(TAG_PREFIX) + 2 :].rpartition(".")
        fields.setdefault(float(horizon_part), {})[name] = value

    def _num(raw: str | None) -> float | None:
        return float(raw) if raw not in (None, "") else None

    return {
        horizon: HorizonScore(
            horizon_minutes=horizon,
            mae=_num(values.get("mae")),
            persistence_mae=_num(values.get("persistence_mae")),
            baseline_mae=_num(values.get("baseline_mae")),
            coverage=int(values.get("coverage") or 0),
        )
        for horizon, values in fields.items()
    }
