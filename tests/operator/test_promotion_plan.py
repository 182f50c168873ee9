"""plan_promotion (pure): the operator judges a candidate on the same rows as the champion."""

from __future__ import annotations

from pulsar_operator.promotion import plan_promotion
from pulsar_operator.spec import parse_spec

from pulsar_core.gate import HorizonScore, Paired, PairedScore, paired_to_tags, scores_to_tags
from pulsar_core.registry import VersionInfo

SPEC = parse_spec({"city": "tehran", "serviceType": "eco", "cityId": 1,
                   "data": {"uris": ["s3://b/t/"], "format": "snapshot-parquet"}})


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
    plan = plan_promotion(SPEC, [candidate, champion], champion, None, None)
    assert plan.target is None and plan.event_reason == "GateFailed"
    assert "same rows as champion version 1" in plan.reason and "2025-12-04" in plan.reason


def test_a_pairing_with_an_older_champion_is_not_used():
    champion = _version("3", 80.0)
    candidate = _version("4", 70.0, _worse_on_the_same_rows("1"))  # paired with version 1
    plan = plan_promotion(SPEC, [candidate, champion], champion, None, None)
    assert plan.target is candidate and plan.event_reason == "Promoted"
