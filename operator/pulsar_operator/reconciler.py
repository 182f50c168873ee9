"""One level-triggered reconcile of a SurgeModel: fetch, decide (pure), apply, report."""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pulsar_core.registry import RegistryUnavailable
from pulsar_operator import metrics
from pulsar_operator.builders import SurgeModel
from pulsar_operator.champion import _call, move_champion, sync_registry
from pulsar_operator.conditions import now_iso, set_condition
from pulsar_operator.kube import SURGEMODELS, KubeError
from pulsar_operator.recorder import Decision, post_event
from pulsar_operator.rollout import LIVE_PHASES, sync_rollout
from pulsar_operator.runtime import Key, Runtime
from pulsar_operator.serving import sync_predictor, utcnow
from pulsar_operator.spec import InvalidSpec, SurgeModelSpec, parse_spec
from pulsar_operator.training import observe_job, start_training
from pulsar_operator.triggers import next_cron_slot, parse_time

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What a reconcile left behind; `retry_after` is set while a dependency is down."""

    status: dict[str, Any]
    retry_after: float | None = None
    error: str | None = None


def _spread(key: Key, seconds: float, width: float = 0.2) -> float:
    """`seconds` ± width/2, fixed per model: 1,000 models created at once do not poll at once."""
    fraction = int(hashlib.sha256("/".join(key).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return seconds * (1 + width * (fraction - 0.5))


def _registry_next(runtime: Runtime, key: Key, status: dict[str, Any]) -> datetime | None:
    """When the registry should be read next (None: now)."""
    registry = status.get("registry") or {}
    retry_at = parse_time(registry.get("retryAt"))
    if retry_at is not None:
        return retry_at
    checked = parse_time(registry.get("checkedAt"))
    if checked is None:
        return None
    return checked + timedelta(seconds=_spread(key, runtime.settings.registry_poll_seconds))


def _registry_due(runtime: Runtime, key: Key, status: dict[str, Any], forced: bool) -> bool:
    due = _registry_next(runtime, key, status)
    return forced or due is None or utcnow() >= due


def next_due(runtime: Runtime, key: Key, spec: SurgeModelSpec | None,
             status: dict[str, Any], now: datetime) -> datetime:
    """The next time this model needs a reconcile without any watch event: a cron slot, the
    registry poll or retry, a rollout deadline, a live rollout's re-check, else the slow
    safety resync."""
    times = [now + timedelta(seconds=_spread(key, runtime.settings.full_resync_seconds, 0.5))]
    if spec is not None and not spec.paused:
        times.append(next_cron_slot(spec.training.schedule, now))
        times.append(_registry_next(runtime, key, status) or now)
        training = status.get("lastTraining") or {}
        job_check = (parse_time(training.get("startedAt")) or now) + _start_grace(runtime)
        if training.get("outcome") == "Running" and job_check > now:
            times.append(job_check)  # a Job whose pods cannot start gets no watch event
        predictor = status.get("predictor") or {}
        started = parse_time(predictor.get("rolloutStartedAt"))
        if started is not None and not predictor.get("rolledOutAt"):
            times.append(started + timedelta(seconds=spec.serving.rollout_deadline_seconds))
        if (status.get("rollout") or {}).get("phase") in LIVE_PHASES:
            times.append(now + timedelta(seconds=_spread(
                key, runtime.settings.rollout_check_seconds)))  # score events queue nothing
    return min(times)


def _start_grace(runtime: Runtime) -> timedelta:
    return timedelta(seconds=runtime.settings.job_start_grace_seconds)


def _backoff(runtime: Runtime, status: dict[str, Any]) -> float:
    failures = int((status.get("registry") or {}).get("failures") or 0)
    return float(min(runtime.settings.max_backoff_seconds, 2.0 * 2 ** min(failures, 10)))


async def _registry_step(runtime: Runtime, model: SurgeModel, status: dict[str, Any],
                         annotations: dict[str, str], decisions: list[Decision]) -> str | None:
    """Run the registry step; on MLflow trouble record Degraded + retryAt and return the error."""
    try:
        await sync_registry(runtime, model, status, annotations, decisions)
    except RegistryUnavailable as error:
        delay = _backoff(runtime, status)
        failures = int((status.get("registry") or {}).get("failures") or 0) + 1
        if failures == 1:
            decisions.append(Decision("MLflowUnavailable", f"{error}; retrying with backoff",
                                      True))
        status["registry"] = {**(status.get("registry") or {}), "error": str(error)[:300],
                              "failures": failures,
                              "retryAt": (utcnow() + timedelta(seconds=delay)).isoformat()}
        metrics.ERRORS.labels("mlflow").inc()
        return str(error)
    if (status.get("registry") or {}).get("failures"):
        decisions.append(Decision("MLflowRecovered", "MLflow registry reachable again"))
    status["registry"] = {"checkedAt": now_iso()}
    return None


async def _revert(runtime: Runtime, model: SurgeModel, status: dict[str, Any], to: str,
                  decisions: list[Decision]) -> None:
    bad = (status.get("champion") or {}).get("version")
    target = await _call(runtime, "get_version", model.registered_model, to)
    await move_champion(runtime, model, status, target, None, "RolloutReverted")
    status["challenger"] = {**(status.get("challenger") or {}), "version": bad, "passed": False,
                            "reason": f"predictor for version {bad} never became ready",
                            "judgedAt": now_iso()}
    decisions.append(Decision("RolloutReverted", f"predictor for version {bad} was not ready "
                              f"within the deadline; reverted to version {to}", True))


def degraded_by(mlflow_error: str | None, nats_error: str | None,
                child_error: str | None = None) -> tuple[str, str] | None:
    """(reason, message) of the Degraded condition from what is down or refused."""
    down = [(reason, text) for reason, text in (("MLflowUnavailable", mlflow_error),
                                                 ("NatsUnavailable", nats_error),
                                                 ("ChildRejected", child_error)) if text]
    if not down:
        return None
    if len(down) == 1:
        reason = down[0][0]
    elif {r for r, _ in down} == {"MLflowUnavailable", "NatsUnavailable"}:
        reason = "MLflowAndNatsUnavailable"
    else:
        reason = down[0][0]
    return reason, "; ".join(text for _, text in down)


async def _guarded(step: Awaitable[T], child: str, rejected: list[str]) -> T | None:
    """Run a step that writes children; an API refusal (4xx) is recorded, not raised."""
    try:
        return await step
    except KubeError as error:
        if error.retryable:
            raise
        rejected.append(f"{child}: {error}"[:600])
        return None


def _record_rejection(status: dict[str, Any], rejected: list[str],
                      decisions: list[Decision]) -> str | None:
    """Keep the refusal (and how often it repeated) in status; one Warning Event per new one."""
    previous = status.get("rejectedChild") or {}
    if not rejected:
        status.pop("rejectedChild", None)
        return None
    message = "; ".join(rejected)
    same = previous.get("message") == message
    status["rejectedChild"] = {"message": message,
                               "failures": int(previous.get("failures") or 0) + 1 if same else 1,
                               "at": now_iso()}
    if not same:
        decisions.append(Decision("ChildRejected", message, True))
    return message


def _nats_decision(status: dict[str, Any], nats_error: str | None) -> Decision | None:
    """An Event when this model first sees NATS go down or come back."""
    previous = next((c for c in status.get("conditions") or [] if c.get("type") == "Degraded"),
                    {})
    was_down = previous.get("status") == "True" and "Nats" in str(previous.get("reason"))
    if nats_error and not was_down:
        return Decision("NatsUnavailable", nats_error, True)
    if was_down and not nats_error:
        return Decision("NatsRecovered", "NATS reachable again; retrain consumer re-established")
    return None


def _readiness(status: dict[str, Any]) -> tuple[bool, str, str]:
    """Ready stays True while any replica serves: a rollout keeps the previous pods answering."""
    champion = (status.get("champion") or {}).get("version")
    predictor = status.get("predictor") or {}
    if not champion:
        return False, "NoChampion", "no version is the champion yet"
    endpoint, ready = predictor.get("endpoint"), int(predictor.get("readyReplicas") or 0)
    if predictor.get("available"):
        return True, "PredictorAvailable", f"version {champion} served at {endpoint}"
    if ready > 0:
        return True, "RollingOut", (f"version {champion} rolling out at {endpoint}; "
                                    f"{ready} of {predictor.get('replicas')} replicas serve")
    if predictor.get("rolloutFailed"):
        return False, "RolloutFailed", str(predictor["rolloutFailed"])
    return False, "PredictorNotReady", "predictor not serving yet"


def _promotion_state(status: dict[str, Any]) -> tuple[bool, str, str]:
    """Promoted: a champion holds the alias, unless something waits on a person or is stuck."""
    champion = (status.get("champion") or {}).get("version")
    promotion = status.get("promotion") or {}
    challenger = status.get("challenger") or {}
    message = promotion.get("reason") or "waiting for a registered version"
    if promotion.get("eventReason") == "PinnedVersionMissing":
        return False, "PinnedVersionMissing", message
    if challenger.get("awaitingApproval") and challenger.get("version") != champion:
        return False, "AwaitingApproval", str(challenger.get("reason") or message)
    if champion:
        return True, "Champion", message
    if challenger and not challenger.get("passed"):
        return False, "GateFailed", str(challenger.get("reason") or message)
    return False, promotion.get("eventReason") or "NoChampion", message


def _finish(status: dict[str, Any], model: SurgeModel | None, generation: int,
            error: str | None, nats_error: str | None = None,
            child_error: str | None = None) -> None:
    conditions = status.get("conditions") or []
    training = status.get("lastTraining") or {}
    running = training.get("outcome") == "Running"
    conditions = set_condition(conditions, "Training", running,
                               training.get("triggerKind", "Idle").capitalize() if running
                               else training.get("outcome", "NeverTrained"),
                               training.get("message") or training.get("job", "no Job yet"),
                               generation)
    promoted, promoted_reason, promoted_message = _promotion_state(status)
    conditions = set_condition(conditions, "Promoted", promoted, promoted_reason,
                               promoted_message, generation)
    degraded = degraded_by(error, nats_error, child_error)
    conditions = set_condition(conditions, "Degraded", degraded is not None,
                               *(degraded or ("AsExpected", "")), generation)
    ready, ready_reason, ready_message = _readiness(status)
    conditions = set_condition(conditions, "Ready", ready, ready_reason, ready_message,
                               generation)
    status["conditions"] = conditions
    status["observedGeneration"] = generation
    paused = model is not None and model.spec.paused
    status["phase"] = ("Paused" if paused else "Degraded" if degraded else "Training" if running
                       else "Serving" if ready else "Pending")


async def reconcile(runtime: Runtime, body: dict[str, Any], *, forced: bool = False,
                    source: str = "loop") -> Outcome:
    """Bring one SurgeModel's children and status to the state its spec and MLflow ask for."""
    meta = body["metadata"]
    key: Key = (meta["namespace"], meta["name"])
    async with runtime.lock(key):
        started = time.monotonic()
        metrics.RECONCILES.labels(source).inc()
        try:
            return await _reconcile(runtime, body, key, forced, source)
        finally:
            metrics.DURATION.observe(time.monotonic() - started)


async def _reconcile(runtime: Runtime, body: dict[str, Any], key: Key, forced: bool,
                     source: str) -> Outcome:
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    original = runtime.statuses.get(key) or {k: v for k, v in (body.get("status") or {}).items()
                                             if k != "kopf"}
    status = copy.deepcopy(original)
    decisions: list[Decision] = []
    annotations = dict(meta.get("annotations") or {})
    try:
        spec = _spec_of(runtime, key, meta, body)
        _check_registry_owner(runtime, key)
    except InvalidSpec as error:
        status["conditions"] = set_condition(status.get("conditions") or [], "Ready", False,
                                             "InvalidSpec", str(error), generation)
        status.update(phase="Failed", observedGeneration=generation)
        if status != original:
            decisions.append(Decision("InvalidSpec", str(error), True))
        await _write(runtime, key, meta, original, status, decisions)
        raise
    model = SurgeModel(name=key[1], namespace=key[0], uid=str(meta.get("uid", "")), spec=spec,
                       platform=runtime.platform, generation=generation)
    status["retrainSubject"] = model.retrain_subject
    error: str | None = None
    rejected: list[str] = []
    if not spec.paused:
        now = utcnow()
        created = parse_time(meta.get("creationTimestamp")) or now
        finished = await observe_job(runtime.kube, model, status, decisions, runtime.children,
                                     now, _start_grace(runtime))
        await _guarded(start_training(runtime.kube, model, status, annotations, created, now,
                                      decisions), "trainer Job", rejected)
        if source != "loop" and not forced and not finished:
            runtime.queue.add(key)  # registry work goes to the bounded loop: Jobs come first
        elif _registry_due(runtime, key, status, forced or finished):
            error = await _registry_step(runtime, model, status, annotations, decisions)
        elif (status.get("registry") or {}).get("error"):
            error = status["registry"]["error"]
        if error is None and status.get("rollout") and (source == "loop" or forced):
            try:  # the live rollout reads NATS and MLflow: bounded loop only, like the registry
                await _guarded(sync_rollout(runtime, model, status, now, decisions),
                               "challenger", rejected)
            except RegistryUnavailable as failure:
                error = str(failure)
        revert_to = await _guarded(sync_predictor(runtime.kube, model, status, now, decisions,
                                                  runtime.children), "predictor", rejected)
        if revert_to and error is None:
            try:
                await _revert(runtime, model, status, revert_to, decisions)
                await sync_predictor(runtime.kube, model, status, now, decisions,
                                     runtime.children)
            except RegistryUnavailable as failure:
                error = str(failure)
    nats_change = _nats_decision(status, runtime.nats_error)
    if nats_change is not None:
        decisions.append(nats_change)
    child_error = _record_rejection(status, rejected, decisions)
    _finish(status, model, generation, error, runtime.nats_error, child_error)
    await _write(runtime, key, meta, original, status, decisions)
    runtime.next_due[key] = next_due(runtime, key, spec, status, utcnow())
    retry = None
    if error is not None:
        retry_at = parse_time((status.get("registry") or {}).get("retryAt"))
        retry = max(1.0, (retry_at - utcnow()).total_seconds()) if retry_at else 5.0
    elif child_error is not None:
        failures = int(status["rejectedChild"]["failures"])
        retry = float(min(runtime.settings.max_backoff_seconds, 5.0 * 2 ** min(failures, 8)))
    return Outcome(status, retry, error or child_error)


def _check_registry_owner(runtime: Runtime, key: Key) -> None:
    """Two SurgeModels never share an MLflow model or a retrain subject by accident (staging
    would serve production's champion, or retrain on its requests): the younger one is refused
    until it names its own."""
    catalog = runtime.catalog
    name, subject = catalog.registered_name(key), catalog.retrain_subject(key)
    for field, what, owner, example in (
            ("registeredModel", f"MLflow model {name!r} belongs to",
             catalog.registry_owner(name), f"pulsar-{key[0]}-{key[1]}"),
            ("retrainSubject", f"NATS subject {subject!r} retrains",
             catalog.subject_owner(subject), f"pulsar.retrain.{key[0]}.{key[1]}")):
        if owner is not None and owner != key:
            raise InvalidSpec(
                f"spec.{field}: {what} SurgeModel {owner[0]}/{owner[1]}; set spec.{field} to "
                f"one of this model's own (e.g. {example})")


def _spec_of(runtime: Runtime, key: Key, meta: dict[str, Any],
             body: dict[str, Any]) -> SurgeModelSpec:
    """The parsed spec, parsed again only when the raw spec differs (a dict comparison costs
    microseconds; validating it on every resync of 1,000 models was most of the idle CPU)."""
    raw = body.get("spec") or {}
    cached = runtime.specs.get(key)
    if cached is not None and cached[0] == raw:
        return cached[1]
    spec = parse_spec(raw)
    runtime.specs[key] = (copy.deepcopy(raw), spec)
    return spec


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch turning `old` into `new` (removed keys become null)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            if value != before:
                patch[key] = merge_patch(before, value)
        elif value != before or key not in old:
            patch[key] = value
    return patch


async def _write(runtime: Runtime, key: Key, meta: dict[str, Any], original: dict[str, Any],
                 status: dict[str, Any], decisions: list[Decision]) -> None:
    """Patch status only when it changed, then post the decisions as Events."""
    if status != original:
        patch = merge_patch(original, status)
        await runtime.kube.patch(SURGEMODELS, key[0], key[1], {"status": patch}, sub="status")
    runtime.statuses[key] = status
    for decision in decisions:
        await post_event(runtime.kube, key[0], key[1], str(meta.get("uid", "")), decision)
