"""champion_machine.decide, one row per transition of "which version serves": the alias move it
asks for, the rollout phase it leaves and the Events it posts. Pure: no MLflow, NATS or API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pulsar_operator.champion_machine import (
    ChampionInputs,
    ChampionMove,
    Evidence,
    PredictorHealth,
    RegistryRead,
    ShadowEvidence,
    WatchEvidence,
    decide,
)
from pulsar_operator.domain import Platform, SurgeModel
from pulsar_operator.spec import parse_spec
from pulsar_operator.status import Challenger, Champion, Predictor, Rollout, Status

from pulsar_core.live_evidence import (
    HorizonEvidence,
    PeriodPair,
    ShadowVerdict,
    Verdict,
    WatchHorizon,
    WatchVerdict,
    WatchVerdictResult,
)
from pulsar_core.promotion import PromotionPlan
from pulsar_core.registry import VersionInfo

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(hours=6)
LAST_PERIOD = NOW - timedelta(minutes=30)


def _model(**spec: Any) -> SurgeModel:
    raw = {"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/"]}, **spec}
    return SurgeModel(name="tehran-eco", namespace="pulsar", uid="u", spec=parse_spec(raw),
                      platform=Platform("http://mlflow"))


def _version(number: str) -> VersionInfo:
    return VersionInfo("m", number, f"run-{number}", "s3://x")


def _passing(number: str) -> PromotionPlan:
    return PromotionPlan(target=_version(number), reason=f"version {number} passed",
                         event_reason="Promoted")


SHADOWING = Status(champion=Champion(version="3"), rollout=Rollout(
    phase="Shadowing", challenger="4", champion="3", started_at="2026-11-29T06:00:00Z",
    verdict="wait"))
WATCHING = Status(champion=Champion(version="4"), last_good_version="3", rollout=Rollout(
    phase="Watching", challenger="4", champion="3", previous="3",
    promoted_at="2026-11-29T10:00:00Z"))
# version 5's predictor started rolling out 6 h ago and never became available
SERVING_5 = Status(champion=Champion(version="5"), last_good_version="4",
                   challenger=Challenger(version="5", passed=True),
                   predictor=Predictor(version="5", rollout_started_at="2026-11-29T06:00:00Z"))
FIRST_5 = SERVING_5.without("last_good_version")
FRESH_5 = SERVING_5.updated(predictor=Predictor(version="5",
                                                rollout_started_at="2026-11-29T11:59:00Z"))
ROLLED_5 = SERVING_5.updated(predictor=Predictor(version="5",
                                                 rollout_started_at="2026-11-29T06:00:00Z",
                                                 rolled_out_at="2026-11-29T06:05:00Z"))
UNAVAILABLE, GAVE_UP = PredictorHealth(False, False), PredictorHealth(False, True)


def _shadow(verdict: Verdict) -> ShadowEvidence:
    horizons = (HorizonEvidence(30.0, 600, 24, 2.0, 1.5, 20, 0.001),)
    pairs = {30.0: [PeriodPair(STARTED, 25, 2.0, 1.5), PeriodPair(LAST_PERIOD, 25, 2.0, 1.5)]}
    return ShadowEvidence(pairs, ShadowVerdict(verdict, f"shadow says {verdict}", horizons))


def _watch(verdict: WatchVerdict) -> WatchEvidence:
    horizons = (WatchHorizon(30.0, 600, 2.4, 600, 2.0),)
    return WatchEvidence(WatchVerdictResult(verdict, f"watch says {verdict}", horizons))


@dataclass(frozen=True)
class Row:
    """One transition: what goes in, the move, the rollout phase and the Events expected."""

    status: Status
    evidence: Evidence
    move: ChampionMove | None
    phase: str | None
    events: tuple[str, ...]
    spec: dict[str, Any] = field(default_factory=dict)


ROWS = {
    "first version is promoted":
        Row(Status(), RegistryRead(_passing("1"), None),
            ChampionMove("1", None, "Promoted"), None, ("Promoted",)),
    "direct strategy promotes over a champion":
        Row(Status(champion=Champion(version="3")), RegistryRead(_passing("4"), _version("3")),
            ChampionMove("4", "3", "Promoted"), None, ("Promoted",),
            {"rollout": {"strategy": "direct"}}),
    "a gate pass starts a shadow instead":
        Row(Status(champion=Champion(version="3")), RegistryRead(_passing("4"), _version("3")),
            None, "Shadowing", ("ShadowStarted",)),
    "a gate pass waits for a running watch":
        Row(WATCHING, RegistryRead(_passing("5"), _version("4")), None, "Watching", ()),
    "shadow win moves the alias and watches":
        Row(SHADOWING, _shadow("promote"), ChampionMove("4", "3", "ShadowPromoted"),
            "Watching", ("ShadowPromoted",)),
    "shadow loss retires the challenger":
        Row(SHADOWING, _shadow("retire"), None, "Retired", ("ShadowRetired",)),
    "shadow still gathering":
        Row(SHADOWING, _shadow("wait"), None, "Shadowing", ()),
    "shadow scores unreadable":
        Row(SHADOWING, ShadowEvidence(unavailable="NATS not connected"), None, "Shadowing", ()),
    "watch regression rolls back, previous None":
        Row(WATCHING, _watch("rollback"), ChampionMove("3", None, "RolledBack"), "RolledBack",
            ("RolledBack",)),
    "watch keeps the new champion":
        Row(WATCHING, _watch("keep"), None, "Promoted", ()),
    "watch still gathering":
        Row(WATCHING, _watch("wait"), None, "Watching", ()),
    "predictor never ready by its deadline reverts":
        Row(SERVING_5, UNAVAILABLE, ChampionMove("4", None, "RolloutReverted"),
            None, ("RolloutReverted",)),
    "Kubernetes gave up on a rolled-out predictor: revert":
        Row(ROLLED_5, GAVE_UP, ChampionMove("4", None, "RolloutReverted"),
            None, ("RolloutReverted",)),
    "predictor late, nothing earlier: rollout failed":
        Row(FIRST_5, UNAVAILABLE, None, None, ("RolloutFailed",)),
    "predictor late, version pinned: rollout failed, no revert":
        Row(SERVING_5, UNAVAILABLE, None, None, ("RolloutFailed",),
            {"serving": {"modelVersion": "5"}}),
    "predictor within its deadline: wait":
        Row(FRESH_5, UNAVAILABLE, None, None, ()),
    "predictor ready once, a later dip: no failure":
        Row(ROLLED_5, UNAVAILABLE, None, None, ()),
    "predictor available: rolled out":
        Row(SERVING_5, PredictorHealth(True, False), None, None, ()),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_each_transition_moves_the_alias_and_phase_as_the_table_says(name: str) -> None:
    row = ROWS[name]
    decision = decide(ChampionInputs(_model(**row.spec), row.status, row.evidence, NOW))
    assert decision.move == row.move
    after = row.status.merged(decision.part)
    assert (after.rollout.phase if after.rollout is not None else None) == row.phase
    assert tuple(d.reason for d in decision.decisions) == row.events


def test_a_shadow_win_records_what_the_watch_compares_against() -> None:
    decision = decide(ChampionInputs(_model(), SHADOWING, _shadow("promote"), NOW))
    rollout = decision.part.rollout
    assert rollout is not None
    assert (rollout.previous, rollout.promoted_at, rollout.decided_at) == (
        "3", "2026-11-29T12:00:00Z", "2026-11-29T12:00:00Z")
    assert rollout.evidence_until == "2026-11-29T11:30:00Z"  # the last paired period
    assert rollout.challenger_live_mae30m == 1.5 and rollout.champion_live_mae30m == 2.0
    assert decision.part.champion is None  # the moved champion comes from move_champion


def test_a_shadow_loss_marks_the_challenger_failed_and_keeps_the_champion() -> None:
    decision = decide(ChampionInputs(_model(), SHADOWING, _shadow("retire"), NOW))
    challenger = decision.part.challenger
    assert challenger is not None and (challenger.version, challenger.passed) == ("4", False)
    assert challenger.reason == "retired after shadow: shadow says retire"
    assert decision.decisions[0].warning and decision.part.champion is None


def test_unreadable_scores_keep_the_evidence_and_say_why() -> None:
    shadow = decide(ChampionInputs(_model(), SHADOWING,
                                   ShadowEvidence(unavailable="NATS not connected"), NOW))
    assert shadow.part.rollout is not None
    assert (shadow.part.rollout.verdict, shadow.part.rollout.reason) == (
        "wait", "evidence kept, not judged: NATS not connected")
    watch = decide(ChampionInputs(_model(), WATCHING,
                                  WatchEvidence(unavailable="NATS not connected"), NOW))
    assert watch.part.rollout is not None
    assert watch.part.rollout.watch == "evidence kept, not judged: NATS not connected"
    assert watch.move is None and not watch.decisions


def test_a_rollback_keeps_the_previous_version_as_last_good_and_blames_the_new_one() -> None:
    decision = decide(ChampionInputs(_model(), WATCHING, _watch("rollback"), NOW))
    assert decision.part.last_good_version == "3"
    challenger = decision.part.challenger
    assert challenger is not None and (challenger.version, challenger.passed) == ("4", False)
    assert decision.part.rollout is not None
    assert decision.part.rollout.rolled_back_at == "2026-11-29T12:00:00Z"
    assert decision.part.rollout.watch_horizons is not None
    assert decision.part.rollout.watch_horizons[0].regression_pct == 20.0


def test_a_revert_blames_the_champion_whose_predictor_never_became_ready() -> None:
    decision = decide(ChampionInputs(_model(), SERVING_5, UNAVAILABLE, NOW))
    challenger = decision.part.challenger
    assert challenger is not None and (challenger.version, challenger.passed) == ("5", False)
    assert challenger.reason == "predictor for version 5 never became ready"
    assert "reverted to version 4" in decision.decisions[0].message


def test_a_failed_rollout_is_said_once_and_cleared_when_the_predictor_becomes_available(
        ) -> None:
    model = _model()
    first = decide(ChampionInputs(model, FIRST_5, UNAVAILABLE, NOW))
    failed = FIRST_5.merged(first.part)
    assert failed.predictor is not None and failed.predictor.rollout_failed is not None
    assert "no earlier version to revert to" in failed.predictor.rollout_failed
    again = decide(ChampionInputs(model, failed, UNAVAILABLE, NOW + timedelta(minutes=1)))
    assert again.decisions == () and again.move is None
    healed = failed.merged(decide(ChampionInputs(model, failed, PredictorHealth(True, False),
                                                 NOW)).part)
    assert healed.predictor is not None and healed.predictor.rollout_failed is None
    assert healed.predictor.rolled_out_at == "2026-11-29T12:00:00Z"
