"""Registry polls write nothing when nothing but their check time changed, and a check time
persisted long ago keeps each model's phase instead of making every model due at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pulsar_operator.reconciler import status_patch
from pulsar_operator.timing import next_poll

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
AT = "2026-11-29T12:00:00Z"
CHECKED = {"phase": "Serving", "registry": {"checkedAt": AT},
           "promotion": {"reason": "version 3 is the champion", "checkedAt": AT}}


def _checked_at(at: str) -> dict[str, object]:
    return {**CHECKED, "registry": {"checkedAt": at},
            "promotion": {**CHECKED["promotion"], "checkedAt": at}}  # type: ignore[dict-item]


def test_a_poll_that_only_moves_the_check_time_writes_nothing() -> None:
    assert status_patch(CHECKED, _checked_at("2026-11-29T12:05:00Z")) is None


def test_a_real_change_is_written_with_the_current_check_times() -> None:
    later = {**_checked_at("2026-11-29T12:05:00Z"), "phase": "Training"}
    # `original` is the status in memory: its check time may be newer than the API's
    original = _checked_at("2026-11-29T12:05:00Z")
    assert status_patch(original, later) == {
        "phase": "Training", "registry": {"checkedAt": "2026-11-29T12:05:00Z"},
        "promotion": {"checkedAt": "2026-11-29T12:05:00Z"}}


def test_the_first_check_and_a_recovery_are_written() -> None:
    assert status_patch({"phase": "Pending"}, {"phase": "Pending", **{
        "registry": {"checkedAt": "2026-11-29T12:00:00Z"}}}) == {
        "registry": {"checkedAt": "2026-11-29T12:00:00Z"}}
    down = {**CHECKED, "registry": {"error": "MLflow down", "failures": 3}}
    assert status_patch(down, CHECKED) == {
        "registry": {"error": None, "failures": None, "checkedAt": "2026-11-29T12:00:00Z"},
        "promotion": {"checkedAt": "2026-11-29T12:00:00Z"}}


def test_next_poll_is_one_interval_after_a_recent_check() -> None:
    assert next_poll(T0, 300, T0 + timedelta(seconds=10)) == T0 + timedelta(seconds=300)
    # overdue by less than an interval (a busy queue): due now, not skipped
    assert next_poll(T0, 300, T0 + timedelta(seconds=500)) == T0 + timedelta(seconds=300)


def test_a_stale_check_time_keeps_its_phase_on_the_next_slot() -> None:
    now = T0 + timedelta(hours=5, seconds=17)
    due = next_poll(T0, 300, now)
    assert now <= due < now + timedelta(seconds=300)
    assert (due - T0).total_seconds() % 300 == 0
    phases = {next_poll(T0 + timedelta(seconds=offset), 300, now) for offset in range(0, 300, 30)}
    assert len(phases) == 10, "models checked at different times stay spread after a restart"
