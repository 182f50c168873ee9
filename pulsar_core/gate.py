"""The promotion gate: a pure function shared by the trainer's report, the demo and the operator.

A candidate is compared per evaluable horizon with (a) persistence, by a minimum improvement, and
(b) the strongest simple baseline, which it must not lose to, and (c) the current champion. The
champion comparison is paired: the trainer scores the champion on the candidate's backtest test
windows that the champion never trained on, and the gate compares the two MAEs on those same
rows, pooled over the folds. Only where no paired score exists for the current champion (it
changed after the candidate was trained) does it fall back to skill (MAE / strongest-baseline
MAE on each version's own test window), and the reason says that the comparison was unpaired.
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
class PairedScore:
    """Served MAE of the candidate and of the champion on the same rows of one test fold."""

    fold: str
    horizon_minutes: float
    mae: float
    champion_mae: float
    rows: int


@dataclass(frozen=True)
class Paired:
    """The candidate scored beside one champion version on the same rows."""

    champion_version: str
    scores: tuple[PairedScore, ...] = ()

    def pooled(self, horizon_minutes: float) -> tuple[float, float, list[PairedScore]] | None:
        """(candidate MAE, champion MAE, folds) over every fold's rows at one horizon."""
        folds = [s for s in self.scores if s.horizon_minutes == horizon_minutes and s.rows > 0]
        rows = sum(s.rows for s in folds)
        if not rows:
            return None
        return (sum(s.mae * s.rows for s in folds) / rows,
                sum(s.champion_mae * s.rows for s in folds) / rows, folds)


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


def _horizon_failures(horizon: float, score: HorizonScore, champion: Scores | None,
                      policy: PromotionPolicy, paired: Paired | None) -> list[str]:
    """Why the candidate fails at one horizon: persistence, the best baseline, then the
    champion (paired on the same rows when both were scored on them, else by skill)."""
    failures: list[str] = []
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
    if paired is not None and (same_rows := paired.pooled(horizon)) is not None:
        failure = _paired_failure(horizon, same_rows, paired, policy)
        return [*failures, failure] if failure else failures
    previous = (champion or {}).get(horizon)
    if previous is not None and previous.skill is not None and score.skill is not None:
        allowed = previous.skill * (1 + policy.max_regression_vs_champion_pct / 100)
        if score.skill > allowed:
            failures.append(
                f"{_fmt(horizon)}: skill {score.skill:.3f} regresses on the champion's "
                f"{previous.skill:.3f} by more than "
                f"{policy.max_regression_vs_champion_pct:g}% (unpaired: each on its own "
                "test day)"
            )
    return failures


def decide(
    candidate: Scores,
    champion: Scores | None,
    policy: PromotionPolicy,
    *,
    approved: bool = False,
    paired: Paired | None = None,
) -> GateVerdict:
    """Judge a candidate version. `approved` is the manual approval for this exact version;
    `paired` the candidate and the current champion scored on the same rows (paired_from_tags)."""
    evaluable = {h: s for h, s in candidate.items() if s.evaluable}
    if not evaluable:
        return GateVerdict(False, "no horizon could be evaluated on the test split")

    failures = [failure for horizon, score in sorted(evaluable.items())
                for failure in _horizon_failures(horizon, score, champion, policy, paired)]
    if failures:
        return GateVerdict(False, "; ".join(failures), failures=failures)
    summary = ", ".join(
        f"{_fmt(h)} MAE {s.mae:.2f} vs baseline {s.baseline_mae:.2f}"
        for h, s in sorted(evaluable.items())
    )
    if paired is not None and paired.scores:
        summary += "; " + "; ".join(
            _paired_text(h, pooled, paired.champion_version)
            for h in sorted(evaluable) if (pooled := paired.pooled(h)) is not None)
    if policy.mode == "manual" and not approved:
        return GateVerdict(False, f"passed the gate, awaiting manual approval ({summary})", True)
    return GateVerdict(True, f"passed: {summary}")


def _paired_text(horizon: float, pooled: tuple[float, float, list[PairedScore]],
                 version: str) -> str:
    mae, champion_mae, folds = pooled
    where = ", ".join(f"{s.fold}: {s.mae:.2f} vs {s.champion_mae:.2f} on {s.rows} rows"
                      for s in folds)
    return (f"{_fmt(horizon)} on the same rows as champion version {version}: MAE {mae:.2f} vs "
            f"{champion_mae:.2f} ({where})")


def _paired_failure(horizon: float, pooled: tuple[float, float, list[PairedScore]],
                    paired: Paired, policy: PromotionPolicy) -> str | None:
    mae, champion_mae, _ = pooled
    if mae <= champion_mae * (1 + policy.max_regression_vs_champion_pct / 100):
        return None
    return (f"{_paired_text(horizon, pooled, paired.champion_version)}: worse by more than "
            f"{policy.max_regression_vs_champion_pct:g}%")


def paired_to_tags(paired: Paired) -> dict[str, str]:
    """Encode a paired comparison as version tags (pulsar.gate.paired.*)."""
    key = f"{TAG_PREFIX}.paired"
    tags = {f"{key}.champion_version": paired.champion_version}
    folds = list(dict.fromkeys(s.fold for s in paired.scores))
    for i, fold in enumerate(folds):
        tags[f"{key}.f{i}.name"] = fold
    for score in paired.scores:
        prefix = f"{key}.f{folds.index(score.fold)}.h{score.horizon_minutes:g}"
        tags[f"{prefix}.mae"] = f"{score.mae:.6g}"
        tags[f"{prefix}.champion_mae"] = f"{score.champion_mae:.6g}"
        tags[f"{prefix}.rows"] = str(score.rows)
    return tags


def paired_from_tags(tags: Mapping[str, str], champion_version: str | None) -> Paired | None:
    """The paired comparison against `champion_version`, or None when the tags pair the
    candidate with another version (or with none)."""
    key = f"{TAG_PREFIX}.paired"
    if champion_version is None or tags.get(f"{key}.champion_version") != champion_version:
        return None
    values: dict[tuple[str, float], dict[str, str]] = {}
    for name, value in tags.items():
        if not name.startswith(f"{key}.f") or name.endswith(".name"):
            continue
        fold, _, rest = name[len(key) + 2:].partition(".h")
        horizon, _, field_name = rest.rpartition(".")
        values.setdefault((fold, float(horizon)), {})[field_name] = value
    scores = tuple(
        PairedScore(fold=tags.get(f"{key}.f{fold}.name", fold), horizon_minutes=horizon,
                    mae=float(v["mae"]), champion_mae=float(v["champion_mae"]),
                    rows=int(v["rows"]))
        for (fold, horizon), v in sorted(values.items()))
    return Paired(champion_version, scores)


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
