"""plan_promotion (pure): one decision for the operator, the trainer's report and the demo."""

from __future__ import annotations

from datetime import UTC, datetime

from pulsar_core.gate import (
    HorizonScore,
    Paired,
    PairedScore,
    PromotionPolicy,
    paired_to_tags,
    scores_to_tags,
)
from pulsar_core.promotion import Judged, plan_promotion
from pulsar_core.registry import VersionInfo

POLICY = PromotionPolicy()
NOW = datetime(2025, 12, 5, 8, 0, tzinfo=UTC)


def _version(number: str, mae: float, paired: Paired | None = None) -> VersionInfo:
    tags = scores_to_tags({30.0: HorizonScore(30.0, mae, 120.0, 100.0, coverage=500)})
    if paired is not None:
        tags |= paired_to_tags(paired)
    return VersionInfo("pulsar-tehran-eco", number, f"run-{number}", "models:/m-x", tags)


def _worse_on_the_same_rows(champion: str) -> Paired:
    return Paired(champion, (PairedScore("2025-12-04", 30.0, 72.0, 66.0, 500),))


def test_better_on_its_own_day_but_worse_on_the_champions_rows_is_not_promoted():
    champion = _version("1", 80.0)  # skill 0.80 on its own test day
    candidate = _version("2", 70.0, _worse_on_the_same_rows("1"))  # skill 0.70 on its own day
    plan = plan_promotion([candidate, champion], champion, POLICY, now=NOW)
    assert plan.target is None and plan.event_reason == "GateFailed"
    assert "same rows as champion version 1" in plan.reason and "2025-12-04" in plan.reason


def test_a_pairing_with_an_older_champion_is_not_used():
    champion = _version("3", 80.0)
    candidate = _version("4", 70.0, _worse_on_the_same_rows("1"))  # paired with version 1
    plan = plan_promotion([candidate, champion], champion, POLICY, now=NOW)
    assert plan.target is candidate and plan.event_reason == "Promoted"


def test_the_verdict_carries_the_time_it_was_given():
    plan = plan_promotion([_version("1", 70.0)], None, POLICY, now=NOW)
    assert plan.target is not None and plan.judgement is not None
    assert plan.judgement.judged_at == NOW and plan.judgement.verdict.passed


def test_a_failed_verdict_is_not_repeated_and_manual_waits_for_its_approval():
    candidate = _version("2", 130.0)  # worse than persistence
    failed = Judged("2", passed=False, awaiting_approval=False, reason="failed before")
    plan = plan_promotion([candidate], None, POLICY, now=NOW, judged=failed)
    assert plan.judgement is None and plan.reason == "failed before"

    manual = PromotionPolicy(mode="manual")
    waiting = plan_promotion([_version("2", 70.0)], None, manual, now=NOW)
    assert waiting.target is None and waiting.event_reason == "AwaitingApproval"
    judged = Judged("2", passed=False, awaiting_approval=True, reason=waiting.reason)
    approved = plan_promotion([_version("2", 70.0)], None, manual, now=NOW, judged=judged,
                              approved_version="2")
    assert approved.target is not None and "approved and passed" in approved.reason


def test_a_pinned_version_wins_and_a_missing_one_is_named():
    versions = [_version("2", 70.0), _version("1", 80.0)]
    assert plan_promotion(versions, versions[0], POLICY, now=NOW, pinned="1").target is versions[1]
    missing = plan_promotion(versions, None, POLICY, now=NOW, pinned="9")
    assert missing.target is None and missing.event_reason == "PinnedVersionMissing"
