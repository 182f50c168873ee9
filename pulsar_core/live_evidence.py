"""Live evidence: should a shadow challenger replace the champion, should a new champion stay?

Both predictors forecast every hexagon from the same live signals; once a target period's actual
has arrived each version's absolute errors are known. Errors are paired per forecast (same
hexagon, horizon and target period; a forecast only one version made is left out) and pooled
per target period, so one period is one paired observation. Hexagons of one period share the
city's weather, events and feed gaps: counting them as independent trials would make any test
far too sure of itself.

The test is a one-sided exact sign test over those periods on the margin-adjusted differential
d = challenger MAE - (1 - margin) * champion MAE: under "the challenger is not better by the
margin" a period is won (d < 0) at most half the time, so the p-value is P(Binomial(n, 1/2) >=
wins). It needs no normality (surge errors are heavy-tailed) and no variance estimate from a
handful of periods. The decision is taken once the fixed sample (enough scored forecasts and
enough time at every horizon) is complete, never by peeking, so alpha is what it says.

Pure: the caller passes the time; nothing here reads a clock, NATS or Kubernetes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

SIGN_TEST = "one-sided exact sign test over target periods"
Verdict = Literal["promote", "retire", "wait"]
WatchVerdict = Literal["rollback", "keep", "wait"]


@dataclass(frozen=True)
class RolloutPolicy:
    """spec.rollout as the decision sees it."""

    min_scored: int = 500  # paired scored forecasts per horizon
    min_duration_seconds: float = 3600.0
    margin_pct: float = 2.0  # the challenger's live MAE must be this much below the champion's
    rollback_regression_pct: float = 10.0  # new champion's live MAE vs the previous one's
    alpha: float = 0.05


@dataclass(frozen=True)
class PeriodPair:
    """One target period at one horizon: both versions' MAE over the forecasts both made."""

    period_start: datetime
    forecasts: int
    champion_mae: float
    challenger_mae: float


@dataclass(frozen=True)
class PeriodScore:
    """One version's MAE over its scored forecasts of one target period at one horizon."""

    period_start: datetime
    forecasts: int
    mae: float


@dataclass(frozen=True)
class HorizonEvidence:
    """The paired evidence of one horizon, with the test's numbers."""

    horizon_minutes: float
    scored: int
    periods: int
    champion_mae: float | None
    challenger_mae: float | None
    wins: int
    p_value: float | None

    @property
    def improvement_pct(self) -> float | None:
        if not self.champion_mae or self.challenger_mae is None:
            return None
        return 100.0 * (1.0 - self.challenger_mae / self.champion_mae)


@dataclass(frozen=True)
class ShadowVerdict:
    verdict: Verdict
    reason: str
    horizons: tuple[HorizonEvidence, ...]
    test: str = SIGN_TEST


@dataclass(frozen=True)
class WatchHorizon:
    horizon_minutes: float
    scored: int
    live_mae: float | None
    previous_scored: int
    previous_mae: float | None

    @property
    def regression_pct(self) -> float | None:
        if not self.previous_mae or self.live_mae is None:
            return None
        return 100.0 * (self.live_mae / self.previous_mae - 1.0)


@dataclass(frozen=True)
class WatchVerdictResult:
    verdict: WatchVerdict
    reason: str
    horizons: tuple[WatchHorizon, ...]


def sign_test_p(wins: int, trials: int) -> float:
    """P(Binomial(trials, 1/2) >= wins): one-sided exact sign test."""
    if trials <= 0:
        return 1.0
    tail = sum(math.comb(trials, k) for k in range(max(wins, 0), trials + 1))
    return min(1.0, tail / 2.0**trials)


def _weighted(values: Sequence[tuple[int, float]]) -> float | None:
    total = sum(n for n, _ in values)
    return sum(n * v for n, v in values) / total if total else None


def horizon_evidence(horizon: float, pairs: Sequence[PeriodPair],
                     margin_pct: float) -> HorizonEvidence:
    """Forecast-weighted live MAEs and the sign test of one horizon's paired periods."""
    used = [p for p in pairs if p.forecasts > 0]
    keep = 1.0 - margin_pct / 100.0
    wins = sum(1 for p in used if p.challenger_mae < keep * p.champion_mae)
    return HorizonEvidence(
        horizon_minutes=horizon, scored=sum(p.forecasts for p in used), periods=len(used),
        champion_mae=_weighted([(p.forecasts, p.champion_mae) for p in used]),
        challenger_mae=_weighted([(p.forecasts, p.challenger_mae) for p in used]),
        wins=wins, p_value=sign_test_p(wins, len(used)) if used else None)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _describe(e: HorizonEvidence) -> str:
    return (f"{e.horizon_minutes:g}m: live MAE {_fmt(e.challenger_mae)} vs champion "
            f"{_fmt(e.champion_mae)} over {e.scored} forecasts, {e.wins}/{e.periods} periods "
            f"won, p={_fmt(e.p_value)}")


def judge_shadow(pairs: Mapping[float, Sequence[PeriodPair]], horizons: Sequence[float],
                 started_at: datetime, now: datetime, policy: RolloutPolicy) -> ShadowVerdict:
    """Promote when every horizon's challenger beats the champion by the margin (sign test,
    p < alpha) on a complete sample; retire when the sample is complete and it does not;
    otherwise wait. A horizon with no paired forecast yet keeps the verdict at wait."""
    evidence = tuple(horizon_evidence(h, pairs.get(h, ()), policy.margin_pct)
                     for h in sorted(horizons))
    elapsed = (now - started_at).total_seconds()
    short = [e for e in evidence if e.scored < policy.min_scored]
    if short or elapsed < policy.min_duration_seconds or not evidence:
        missing = ", ".join(f"{e.horizon_minutes:g}m {e.scored}/{policy.min_scored} scored"
                            for e in short)
        clock = f"{elapsed / 60:.0f} of {policy.min_duration_seconds / 60:.0f} min"
        return ShadowVerdict("wait", f"gathering live evidence ({missing or 'enough scored'}; "
                             f"{clock})", evidence)
    losing = [e for e in evidence if e.p_value is None or e.p_value >= policy.alpha]
    if not losing:
        return ShadowVerdict("promote", f"beats the champion by more than {policy.margin_pct:g}%"
                             f" live (alpha {policy.alpha:g}): "
                             + "; ".join(_describe(e) for e in evidence), evidence)
    worst = max(losing, key=lambda e: e.p_value if e.p_value is not None else 2.0)
    return ShadowVerdict("retire", f"does not beat the champion by {policy.margin_pct:g}% live "
                         f"at {worst.horizon_minutes:g}m (alpha {policy.alpha:g}): "
                         + "; ".join(_describe(e) for e in evidence), evidence)


def preceding(scores: Sequence[PeriodScore], before: datetime,
              periods: int) -> list[PeriodScore]:
    """The last `periods` scored periods whose target started before `before`."""
    earlier = sorted((s for s in scores if s.period_start < before),
                     key=lambda s: s.period_start)
    return earlier[-periods:] if periods > 0 else []


def judge_watch(after: Mapping[float, Sequence[PeriodScore]],
                previous: Mapping[float, Sequence[PeriodScore]], horizons: Sequence[float],
                split: datetime, promoted_at: datetime, now: datetime, policy: RolloutPolicy
                ) -> WatchVerdictResult:
    """Roll back as soon as a horizon's new champion, over at least min_scored forecasts of
    target periods after `split` (the last period the shadow judged), is worse than the previous
    champion on the preceding window (as many periods before `split`) by more than the
    regression threshold; keep once the sample is complete and min_duration has passed since
    `promoted_at`. Periods are data time, durations wall time: a replay works like live."""
    rows = []
    for horizon in sorted(horizons):
        mine = [s for s in after.get(horizon, ()) if s.period_start > split]
        before = preceding(previous.get(horizon, ()), split + timedelta(microseconds=1),
                           len(mine))
        rows.append(WatchHorizon(
            horizon, sum(s.forecasts for s in mine),
            _weighted([(s.forecasts, s.mae) for s in mine]),
            sum(s.forecasts for s in before), _weighted([(s.forecasts, s.mae) for s in before])))
    judged = [r for r in rows if r.scored >= policy.min_scored and r.previous_mae]
    regressed = [r for r in judged if (r.regression_pct or 0.0) > policy.rollback_regression_pct]

    def text(r: WatchHorizon) -> str:
        return (f"{r.horizon_minutes:g}m: live MAE {_fmt(r.live_mae)} over {r.scored} forecasts "
                f"vs previous champion {_fmt(r.previous_mae)} over {r.previous_scored}")

    if regressed:
        worst = max(regressed, key=lambda r: r.regression_pct or 0.0)
        return WatchVerdictResult("rollback", f"live MAE regressed "
                                  f"{worst.regression_pct:.1f}% (threshold "
                                  f"{policy.rollback_regression_pct:g}%) at "
                                  f"{worst.horizon_minutes:g}m: {text(worst)}", tuple(rows))
    elapsed = (now - promoted_at).total_seconds()
    if len(judged) == len(rows) and rows and elapsed >= policy.min_duration_seconds:
        return WatchVerdictResult("keep", "no live regression: "
                                  + "; ".join(text(r) for r in rows), tuple(rows))
    return WatchVerdictResult("wait", "watching the new champion: "
                              + "; ".join(text(r) for r in rows), tuple(rows))


# (horizon minutes, target period start) -> {forecast key (hexagon:service): absolute error}
VersionErrors = Mapping[tuple[float, datetime], Mapping[str, float]]


def pair_periods(champion: VersionErrors, challenger: VersionErrors
                 ) -> dict[float, list[PeriodPair]]:
    """Per horizon, the periods both versions scored, each over the forecasts both made."""
    out: dict[float, list[PeriodPair]] = {}
    for (horizon, period), theirs in sorted(challenger.items()):
        ours = champion.get((horizon, period))
        common = sorted(set(ours or ()) & set(theirs))
        if not common or ours is None:
            continue
        out.setdefault(horizon, []).append(PeriodPair(
            period, len(common), sum(ours[k] for k in common) / len(common),
            sum(theirs[k] for k in common) / len(common)))
    return out


def period_scores(errors: VersionErrors) -> dict[float, list[PeriodScore]]:
    """Per horizon, one version's MAE per scored target period (in time order)."""
    out: dict[float, list[PeriodScore]] = {}
    for (horizon, period), values in sorted(errors.items()):
        if values:
            out.setdefault(horizon, []).append(
                PeriodScore(period, len(values), sum(values.values()) / len(values)))
    return out
