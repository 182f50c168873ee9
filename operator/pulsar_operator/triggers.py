"""Pure trigger decisions: which training run, if any, spec + status + annotations ask for."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from pulsar_operator.builders import short_hash
from pulsar_operator.clock import parse_time
from pulsar_operator.domain import Trigger
from pulsar_operator.names import RETRAIN_ANNOTATION
from pulsar_operator.spec import SurgeModelSpec


def training_hash(spec: SurgeModelSpec) -> str:
    """Hash of what a trained model depends on; serving or schedule edits do not retrain."""
    relevant = spec.model_dump(mode="json", include={"city", "city_id", "service_type",
                                                      "service_type_id", "data", "training"})
    relevant["training"].pop("schedule", None)
    relevant["training"].pop("resources", None)
    # unset sources stay out (a model of before spec.data.clickhouse keeps its hash: no retrain
    # on upgrade), and so does the Secret's name: rotating credentials is not new data
    relevant["data"] = {key: value for key, value in relevant["data"].items() if value is not None}
    if isinstance(relevant["data"].get("clickhouse"), dict):
        relevant["data"]["clickhouse"].pop("credentials_secret", None)
    return short_hash(json.dumps(relevant, sort_keys=True), 12)




def last_cron_slot(schedule: str, now: datetime) -> datetime:
    """The most recent time at or before `now` the schedule fired."""
    # cron resolves minutes: every model sharing a schedule shares one computation a minute
    return _slot_at_minute(schedule, now.replace(second=0, microsecond=0))


def next_cron_slot(schedule: str, now: datetime) -> datetime:
    """The first time after `now` the schedule fires."""
    return _next_after_minute(schedule, now.replace(second=0, microsecond=0))


@functools.lru_cache(maxsize=1024)
def _next_after_minute(schedule: str, minute: datetime) -> datetime:
    fired: datetime = croniter(schedule, minute + timedelta(seconds=59)).get_next(datetime)
    return fired.astimezone(UTC)


@functools.lru_cache(maxsize=1024)
def _slot_at_minute(schedule: str, minute: datetime) -> datetime:
    fired: datetime = croniter(schedule, minute + timedelta(seconds=59)).get_prev(datetime)
    return fired.astimezone(UTC)




@dataclass(frozen=True)
class TriggerState:
    """What status and annotations say was already handled."""

    trained_hash: str | None
    schedule_base: datetime
    pending_request: str | None
    handled_request: str | None

    @classmethod
    def read(cls, status: dict[str, Any], annotations: dict[str, str],
             created: datetime) -> TriggerState:
        training = status.get("lastTraining") or {}
        return cls(
            trained_hash=training.get("specHash"),
            schedule_base=parse_time(status.get("lastScheduledAt")) or created,
            pending_request=annotations.get(RETRAIN_ANNOTATION),
            handled_request=status.get("lastRetrainRequest"),
        )


def next_trigger(spec: SurgeModelSpec, generation: int, state: TriggerState, now: datetime,
                 reason: str = "") -> Trigger | None:
    """Spec change first, then a pending retrain request, then a due cron slot; None if idle."""
    if spec.paused:
        return None
    current = training_hash(spec)
    if state.trained_hash != current:
        why = "first training" if state.trained_hash is None else "training spec changed"
        return Trigger("spec", f"spec-g{generation}-{current}", why, now)
    if state.pending_request and state.pending_request != state.handled_request:
        return Trigger("retrain", f"retrain-{state.pending_request}",
                       reason or "retrain requested over NATS", now)
    slot = last_cron_slot(spec.training.schedule, now)
    if slot > state.schedule_base:
        return Trigger("schedule", f"schedule-{slot.strftime('%Y%m%dT%H%M')}",
                       f"schedule {spec.training.schedule!r}", slot)
    return None
