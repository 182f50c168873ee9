"""When: the one place that decides what a reconcile must do now and when it runs next.

A reconcile asks `due_work` which timed parts are due this pass (the registry read, the live
rollout's judgement) and answers the work queue with `requeue_after`: the earliest of every
timed need of the model (cron slot, registry poll or retry, Job start check, rollout deadline,
rollout re-check, a refused child's backoff, the slow safety resync). Nothing else schedules.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pulsar_operator.clock import parse_time
from pulsar_operator.config import OperatorSettings
from pulsar_operator.names import APPROVE_ANNOTATION
from pulsar_operator.rollout import LIVE_PHASES
from pulsar_operator.spec import SurgeModelSpec
from pulsar_operator.status import Predictor, RejectedChild, Status, Training
from pulsar_operator.triggers import next_cron_slot

Key = tuple[str, str]


def spread(key: Key, seconds: float, width: float = 0.2) -> float:
    """`seconds` ± width/2, fixed per model: 1,000 models created at once do not poll at once."""
    fraction = int(hashlib.sha256("/".join(key).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return seconds * (1 + width * (fraction - 0.5))


def next_poll(checked: datetime, interval: float, now: datetime) -> datetime:
    """`checked` + one interval, unless that is a whole interval past: a check time persisted
    long ago (it is written only with other changes, and a restart forgets the newer one in
    memory) keeps the model's phase on the next slot from now, so 1,000 models restarted
    together do not all read MLflow at once."""
    due = checked + timedelta(seconds=interval)
    late = (now - due).total_seconds()
    if late <= interval:
        return due
    return due + timedelta(seconds=interval * math.ceil(late / interval))


def registry_next(settings: OperatorSettings, key: Key, status: Status,
                  now: datetime) -> datetime | None:
    """When the registry should be read next (None: now, it never was)."""
    registry = status.registry
    if registry is None:
        return None
    retry_at = parse_time(registry.retry_at)
    if retry_at is not None:
        return retry_at
    checked = parse_time(registry.checked_at)
    if checked is None:
        return None
    return next_poll(checked, spread(key, settings.registry_poll_seconds), now)


def inputs_of(spec: dict[str, Any], annotations: dict[str, str]) -> str:
    """A fingerprint of what a registry read depends on besides MLflow: the spec (policy,
    pinned version) and the approval annotation. A retrain request is not among them: its
    Job starts without waiting for MLflow, whose read follows when the Job ends."""
    approval = annotations.get(APPROVE_ANNOTATION)
    text = json.dumps({"spec": spec, "approval": approval}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _number(version: str | None) -> int:
    try:
        return int(version or 0)
    except ValueError:
        return 0


def announced_unseen(status: Status, announced: int | None) -> bool:
    """MLflow announced a version newer than any this model's status has judged or serves."""
    if not announced:
        return False
    known = max(_number(status.challenger.version if status.challenger else None),
                _number(status.champion.version if status.champion else None))
    return announced > known


@dataclass(frozen=True)
class Due:
    """The timed parts of one reconcile pass."""

    registry: bool
    rollout: bool


def due_work(settings: OperatorSettings, key: Key, status: Status, *, inputs_changed: bool,
             job_finished: bool, announced: int | None, rollout_next: datetime | None,
             now: datetime) -> Due:
    """What this pass must do beyond the children: read the registry when its poll or retry
    time came, a Job just finished, the spec or annotations changed, or MLflow announced an
    unseen version; judge a live rollout when its re-check came or the inputs changed."""
    next_read = registry_next(settings, key, status, now)
    registry = (next_read is None or now >= next_read or job_finished or inputs_changed
                or announced_unseen(status, announced))
    rollout = status.rollout is not None and (
        inputs_changed or rollout_next is None or now >= rollout_next)
    return Due(registry, rollout)


def next_rollout_check(settings: OperatorSettings, key: Key, now: datetime) -> datetime:
    return now + timedelta(seconds=spread(key, settings.rollout_check_seconds))


def rejected_backoff(settings: OperatorSettings, rejected: RejectedChild | None) -> float | None:
    """A refused child is tried again after a backoff that doubles with each repeat."""
    if rejected is None:
        return None
    return float(min(settings.max_backoff_seconds, 5.0 * 2 ** min(rejected.failures, 8)))


def registry_backoff(settings: OperatorSettings, failures: int) -> float:
    """The wait before the next registry read while MLflow fails (`failures` so far)."""
    return float(min(settings.max_backoff_seconds, 2.0 * 2 ** min(failures, 10)))


def next_due(settings: OperatorSettings, key: Key, spec: SurgeModelSpec | None, status: Status,
             now: datetime, *, rollout_next: datetime | None = None,
             start_check: datetime | None = None) -> datetime:
    """The next time this model needs a reconcile without any watch event: a cron slot, the
    registry poll or retry, a Job start check, a rollout deadline, a live rollout's re-check,
    else the slow safety resync."""
    times = [now + timedelta(seconds=spread(key, settings.full_resync_seconds, 0.5))]
    if spec is not None and not spec.paused:
        times.append(next_cron_slot(spec.training.schedule, now))
        times.append(registry_next(settings, key, status, now) or now)
        training = status.last_training or Training()
        if training.outcome == "Running":
            grace = timedelta(seconds=settings.job_start_grace_seconds)
            first = (parse_time(training.started_at) or now) + grace
            check = start_check or first
            if check > now:
                times.append(check)  # a Job whose pods cannot start gets no watch event
        predictor = status.predictor or Predictor()
        started = parse_time(predictor.rollout_started_at)
        if started is not None and not predictor.rolled_out_at:
            times.append(started + timedelta(seconds=spec.serving.rollout_deadline_seconds))
        if status.rollout is not None and status.rollout.phase in LIVE_PHASES:
            # score events queue nothing: the rollout is judged on its own clock
            times.append(rollout_next or next_rollout_check(settings, key, now))
    return min(times)


def requeue_after(settings: OperatorSettings, key: Key, spec: SurgeModelSpec | None,
                  status: Status, now: datetime, *, rollout_next: datetime | None = None,
                  start_check: datetime | None = None) -> float:
    """Seconds until the next pass (the work queue's `schedule`), a refused child's backoff
    included."""
    due = next_due(settings, key, spec, status, now, rollout_next=rollout_next,
                   start_check=start_check)
    seconds = (due - now).total_seconds()
    backoff = rejected_backoff(settings, status.rejected_child)
    if backoff is not None:
        seconds = min(seconds, backoff)
    return max(seconds, 0.0)
