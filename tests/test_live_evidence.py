"""The live-evidence decisions: shadow verdict (sign test) and the post-promotion watch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pulsar_core.live_evidence import (
    PeriodPair,
    PeriodScore,
    RolloutPolicy,
    judge_shadow,
    judge_watch,
    pair_periods,
    period_scores,
    sign_test_p,
)

T0 = datetime(2025, 3, 1, tzinfo=UTC)
STEP = timedelta(minutes=7.5)
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # wall time: unrelated to the periods' data time
POLICY = RolloutPolicy(min_scored=200, min_duration_seconds=3600, margin_pct=2,
                       rollback_regression_pct=10)


def pairs(champion: list[float], challenger: list[float], n: int = 40) -> list[PeriodPair]:
    return [PeriodPair(T0 + i * STEP, n, a, b)
            for i, (a, b) in enumerate(zip(champion, challenger, strict=True))]


def noisy(mean: float, count: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, 0.3, count).clip(0.1))


def test_sign_test_matches_the_binomial_tail() -> None:
    assert sign_test_p(5, 5) == pytest.approx(1 / 32)
    assert sign_test_p(0, 5) == 1.0
    assert sign_test_p(8, 10) == pytest.approx((45 + 10 + 1) / 1024)
    assert sign_test_p(0, 0) == 1.0


def test_a_clearly_better_challenger_is_promoted_with_its_numbers() -> None:
    both = {30.0: pairs(noisy(4.0, 12, 1), noisy(3.0, 12, 2)),
            60.0: pairs(noisy(5.0, 12, 3), noisy(4.0, 12, 4))}
    verdict = judge_shadow(both, [30, 60], T0, T0 + timedelta(hours=2), POLICY)
    assert verdict.verdict == "promote", verdict.reason
    first = verdict.horizons[0]
    assert first.scored == 480 and first.periods == 12 and first.wins == 12
    assert first.p_value == pytest.approx(0.5**12)
    assert first.improvement_pct is not None and first.improvement_pct > 15
    assert "sign test" in verdict.test and "p=" in verdict.reason


def test_a_worse_challenger_is_retired() -> None:
    both = {30.0: pairs(noisy(3.0, 12, 1), noisy(4.0, 12, 2))}
    verdict = judge_shadow(both, [30], T0, T0 + timedelta(hours=2), POLICY)
    assert verdict.verdict == "retire" and "30m" in verdict.reason
    assert verdict.horizons[0].wins == 0


def test_a_tie_is_retired_not_promoted_by_chance() -> None:
    same = noisy(3.0, 12, 7)
    verdict = judge_shadow({30.0: pairs(same, same)}, [30], T0, T0 + timedelta(hours=2), POLICY)
    assert verdict.verdict == "retire"


def test_better_by_less_than_the_margin_is_retired() -> None:
    champion = noisy(3.0, 12, 5)
    challenger = [v * 0.99 for v in champion]  # 1% better, the margin asks for 2%
    verdict = judge_shadow({30.0: pairs(champion, challenger)}, [30], T0,
                           T0 + timedelta(hours=2), POLICY)
    assert verdict.verdict == "retire"


@pytest.mark.parametrize(("count", "elapsed_hours", "horizons"), [
    (4, 2, [30]),  # 160 scored < 200
    (12, 0.5, [30]),  # enough scored, too soon
    (12, 2, [30, 60]),  # 60m not scored at all
])
def test_partial_evidence_waits(count: int, elapsed_hours: float, horizons: list[float]) -> None:
    both = {30.0: pairs(noisy(4.0, count, 1), noisy(2.0, count, 2))}
    verdict = judge_shadow(both, horizons, T0, T0 + timedelta(hours=elapsed_hours), POLICY)
    assert verdict.verdict == "wait", verdict.reason


def test_pairing_uses_only_forecasts_both_versions_made() -> None:
    champion = {(30.0, T0): {"a": 4.0, "b": 2.0, "c": 9.0}, (30.0, T0 + STEP): {"a": 1.0}}
    challenger = {(30.0, T0): {"a": 3.0, "b": 1.0}, (60.0, T0): {"a": 1.0}}
    paired = pair_periods(champion, challenger)
    assert paired == {30.0: [PeriodPair(T0, 2, 3.0, 2.0)]}
    assert period_scores(champion)[30.0] == [PeriodScore(T0, 3, 5.0),
                                             PeriodScore(T0 + STEP, 1, 1.0)]


def scores(values: list[float], start: datetime, n: int = 40) -> list[PeriodScore]:
    return [PeriodScore(start + i * STEP, n, v) for i, v in enumerate(values)]


def test_watch_rolls_back_a_regressed_champion_against_the_preceding_window() -> None:
    promoted = T0 + 20 * STEP
    previous = {30.0: scores([9.0] * 10 + [3.0] * 10, T0)}  # only the last 6 periods count
    after = {30.0: scores([3.6] * 6, promoted)}
    verdict = judge_watch(after, previous, [30], promoted - STEP, NOW,
                          NOW + timedelta(minutes=45), POLICY)
    assert verdict.verdict == "rollback", verdict.reason
    row = verdict.horizons[0]
    assert row.previous_mae == pytest.approx(3.0) and row.regression_pct == pytest.approx(20)


def test_watch_keeps_a_champion_within_the_threshold_once_the_sample_is_complete() -> None:
    promoted = T0 + 20 * STEP
    previous = {30.0: scores([3.0] * 20, T0)}
    after = {30.0: scores([3.2] * 10, promoted)}
    early = judge_watch(after, previous, [30], promoted - STEP, NOW,
                        NOW + timedelta(minutes=30), POLICY)
    assert early.verdict == "wait"
    late = judge_watch(after, previous, [30], promoted - STEP, NOW, NOW + timedelta(hours=2),
                       POLICY)
    assert late.verdict == "keep", late.reason


def test_watch_waits_for_enough_scored_forecasts() -> None:
    promoted = T0 + 20 * STEP
    after = {30.0: scores([30.0] * 2, promoted)}  # awful but only 80 forecasts
    verdict = judge_watch(after, {30.0: scores([3.0] * 20, T0)}, [30], promoted - STEP, NOW,
                          NOW + timedelta(hours=3), POLICY)
    assert verdict.verdict == "wait"
