from pulsar_core.gate import (
    HorizonScore,
    Paired,
    PairedScore,
    PromotionPolicy,
    decide,
    paired_from_tags,
    paired_to_tags,
    scores_from_tags,
    scores_to_tags,
)


def _scores(mae30: float, base30: float = 100.0, pers30: float = 120.0) -> dict:
    return {
        30.0: HorizonScore(30.0, mae30, pers30, base30, coverage=500),
        90.0: HorizonScore(90.0, None, None, None, coverage=0),
    }


def test_candidate_better_than_baselines_passes() -> None:
    verdict = decide(_scores(90.0), None, PromotionPolicy())
    assert verdict.passed
    assert "30m MAE 90.00" in verdict.reason


def test_candidate_worse_than_best_baseline_fails_with_reason() -> None:
    verdict = decide(_scores(101.0), None, PromotionPolicy())
    assert not verdict.passed
    assert "worse than the best baseline" in verdict.reason


def test_not_enough_gain_over_persistence_fails() -> None:
    verdict = decide(_scores(95.0, base30=96.0, pers30=98.0), None, PromotionPolicy())
    assert not verdict.passed
    assert "persistence" in verdict.reason


def test_regression_against_champion_uses_skill() -> None:
    champion = _scores(80.0)  # skill 0.80
    verdict = decide(_scores(90.0), champion, PromotionPolicy())  # skill 0.90
    assert not verdict.passed
    assert "regresses" in verdict.reason
    # the same MAE on a harder test day (higher baseline) is a better skill: passes
    assert decide(_scores(90.0, base30=120.0, pers30=130.0), champion, PromotionPolicy()).passed


def test_manual_policy_waits_for_approval() -> None:
    policy = PromotionPolicy(mode="manual")
    waiting = decide(_scores(90.0), None, policy)
    assert not waiting.passed and waiting.awaiting_approval
    assert decide(_scores(90.0), None, policy, approved=True).passed


def test_nothing_evaluable_fails() -> None:
    verdict = decide({90.0: HorizonScore(90.0, None, None, None)}, None, PromotionPolicy())
    assert not verdict.passed


def test_tags_round_trip() -> None:
    scores = _scores(90.0)
    assert scores_from_tags({**scores_to_tags(scores), "other": "x"}) == scores


def _paired(mae: float, champion_mae: float, version: str = "3") -> Paired:
    return Paired(version, (PairedScore("2025-12-03", 30.0, mae, champion_mae, 400),
                            PairedScore("2025-12-04", 30.0, mae, champion_mae, 100)))


def test_challenger_better_on_its_own_day_but_worse_on_the_same_rows_is_not_promoted() -> None:
    champion = _scores(80.0)  # skill 0.80 on the champion's own test day
    challenger = _scores(70.0)  # skill 0.70 on its own (easier) day: the unpaired check passes
    assert decide(challenger, champion, PromotionPolicy()).passed
    verdict = decide(challenger, champion, PromotionPolicy(), paired=_paired(72.0, 66.0))
    assert not verdict.passed
    assert "same rows as champion version 3" in verdict.reason
    assert "2025-12-03: 72.00 vs 66.00 on 400 rows" in verdict.reason
    assert "2025-12-04" in verdict.reason


def test_paired_comparison_pools_the_folds_and_allows_the_policy_margin() -> None:
    paired = Paired("3", (PairedScore("a", 30.0, 70.0, 60.0, 100),  # worse on a small fold
                          PairedScore("b", 30.0, 60.0, 70.0, 900)))  # better on a big one
    verdict = decide(_scores(90.0), _scores(95.0), PromotionPolicy(), paired=paired)
    assert verdict.passed and "MAE 61.00 vs 69.00" in verdict.reason
    within = decide(_scores(90.0), None, PromotionPolicy(), paired=_paired(61.0, 60.0))
    assert within.passed  # 1.7% worse: inside max_regression_vs_champion_pct = 2


def test_unpaired_fallback_says_so() -> None:
    verdict = decide(_scores(90.0), _scores(80.0), PromotionPolicy())
    assert not verdict.passed and "unpaired" in verdict.reason


def test_paired_tags_round_trip_and_name_their_champion() -> None:
    paired = Paired("3", (PairedScore("last 12h", 7.5, 50.5, 52.25, 10),
                          PairedScore("last 12h", 30.0, 60.0, 58.0, 8)))
    tags = {**paired_to_tags(paired), **scores_to_tags(_scores(90.0))}
    assert paired_from_tags(tags, "3") == paired
    assert paired_from_tags(tags, "4") is None  # the champion changed since: not this pairing
    assert paired_from_tags(tags, None) is None
    assert scores_from_tags(tags) == _scores(90.0)  # paired tags never leak into the scores
