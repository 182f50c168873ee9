from pulsar_core.gate import HorizonScore, PromotionPolicy, decide, scores_from_tags, scores_to_tags


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
