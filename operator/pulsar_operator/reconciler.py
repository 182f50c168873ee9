"""One level-triggered reconcile of a SurgeModel: fetch, decide (pure), apply, report."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pulsar_core.events import model_retrain_subject
from pulsar_core.registry import RegistryUnavailable
from pulsar_operator import metrics
from pulsar_operator.champion import AliasNotMoved, enact, sync_registry
from pulsar_operator.champion_machine import (
    ChampionDecision,
    ChampionInputs,
    PredictorHealth,
    decide,
)
from pulsar_operator.clock import iso, parse_time, utcnow
from pulsar_operator.conditions import set_condition
from pulsar_operator.domain import SurgeModel
from pulsar_operator.kube import SURGEMODELS, KubeError
from pulsar_operator.policy import Policy
from pulsar_operator.recorder import Decision, post_event
from pulsar_operator.rollout import remove_challenger, sync_rollout
from pulsar_operator.runtime import Key, Runtime
from pulsar_operator.serving import Served, sync_predictor
from pulsar_operator.signals import sync_signals
from pulsar_operator.spec import InvalidSpec, SurgeModelSpec, parse_spec
from pulsar_operator.status import (
    Predictor,
    Promotion,
    Registry,
    RejectedChild,
    Status,
    Step,
    Training,
)
from pulsar_operator.timing import (
    due_work,
    inputs_of,
    next_rollout_check,
    registry_backoff,
    requeue_after,
)
from pulsar_operator.training import observe_job, start_training

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What a reconcile left behind: its status, when it wants to run again (the work
    queue's schedule) and what was down or refused, if anything."""

    status: dict[str, Any]
    requeue_after: float
    error: str | None = None


class ModelGone(LookupError):
    """The SurgeModel was deleted while its reconcile ran: nothing more is written for it."""


def registry_down(registry: Registry | None, error: RegistryUnavailable, delay: float,
                  now: datetime) -> Step[Status]:
    """status.registry while MLflow is down (error, failures in a row, retryAt); an Event on
    the first failure only."""
    failures = ((registry.failures or 0) if registry is not None else 0) + 1
    down = (registry or Registry()).updated(
        error=str(error)[:300], failures=failures,
        retry_at=(now + timedelta(seconds=delay)).isoformat())
    first = (Decision("MLflowUnavailable", f"{error}; retrying with backoff", True),)
    return Step(Status(registry=down), first if failures == 1 else ())


async def _registry_step(runtime: Runtime, model: SurgeModel, status: Status,
                         annotations: dict[str, str],
                         now: datetime) -> tuple[Step[Status], str | None]:
    """The registry step's part, or on MLflow trouble Degraded + retryAt and the error."""
    try:
        step = await sync_registry(runtime, model, status, annotations, now)
    except RegistryUnavailable as error:
        metrics.ERRORS.labels("mlflow").inc()
        kept = error.kept if isinstance(error, AliasNotMoved) else Status()
        failures = (status.registry.failures or 0) if status.registry is not None else 0
        down = registry_down(status.registry, error,
                             registry_backoff(runtime.settings, failures), now)
        return Step(kept.merged(down.part), down.decisions), str(error)
    recovered = (Decision("MLflowRecovered", "MLflow registry reachable again"),) \
        if status.registry is not None and status.registry.failures else ()
    return Step(step.part.updated(registry=Registry(checked_at=iso(now))),
                step.decisions + recovered), None


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


def rejection(previous: RejectedChild | None, rejected: list[str],
              now: datetime) -> Step[RejectedChild | None]:
    """The refusal kept in status (and how often it repeated); one Warning Event per new one."""
    if not rejected:
        return Step(None)
    message = "; ".join(rejected)
    same = previous is not None and previous.message == message
    record = RejectedChild(message=message, failures=previous.failures + 1
                           if previous is not None and same else 1, at=iso(now))
    return Step(record, () if same else (Decision("ChildRejected", message, True),))


def _nats_decision(status: Status, nats_error: str | None) -> Decision | None:
    """An Event when this model first sees NATS go down or come back."""
    previous = next((c for c in status.conditions or [] if c.type == "Degraded"), None)
    was_down = previous is not None and previous.status == "True" and \
        "Nats" in str(previous.reason)
    if nats_error and not was_down:
        return Decision("NatsUnavailable", nats_error, True)
    if was_down and not nats_error:
        return Decision("NatsRecovered", "NATS reachable again; retrain consumer re-established")
    return None


def _failed_training(status: Status) -> Training | None:
    training = status.last_training
    return training if training is not None and training.outcome == "Failed" else None


def _readiness(status: Status) -> tuple[bool, str, str]:
    """Ready stays True while any replica serves: a rollout keeps the previous pods answering."""
    champion = status.champion.version if status.champion else None
    predictor = status.predictor or Predictor()
    failed = _failed_training(status)
    if not champion and failed is not None:
        return False, "TrainingFailed", (f"no champion yet and training {failed.job} failed: "
                                         f"{failed.message or 'see its pods'}")
    if not champion:
        return False, "NoChampion", "no version is the champion yet"
    endpoint, ready = predictor.endpoint, predictor.ready_replicas or 0
    if predictor.available:
        return True, "PredictorAvailable", f"version {champion} served at {endpoint}"
    if ready > 0:
        return True, "RollingOut", (f"version {champion} rolling out at {endpoint}; "
                                    f"{ready} of {predictor.replicas} replicas serve")
    if predictor.rollout_failed:
        return False, "RolloutFailed", predictor.rollout_failed
    return False, "PredictorNotReady", "predictor not serving yet"


def _promotion_state(status: Status) -> tuple[bool, str, str]:
    """Promoted: a champion holds the alias, unless something waits on a person or is stuck."""
    champion = status.champion.version if status.champion else None
    promotion = status.promotion or Promotion()
    challenger = status.challenger
    message = promotion.reason or "waiting for a registered version"
    if promotion.event_reason == "PinnedVersionMissing":
        return False, "PinnedVersionMissing", message
    if challenger and challenger.awaiting_approval and challenger.version != champion:
        return False, "AwaitingApproval", challenger.reason or message
    if champion:
        return True, "Champion", message
    if challenger and not challenger.passed:
        return False, "GateFailed", challenger.reason or message
    return False, promotion.event_reason or "NoChampion", message


def finish(status: Status, paused: bool, generation: int, error: str | None,
           nats_error: str | None = None, child_error: str | None = None) -> Status:
    """The conditions, observedGeneration and phase that sum up the other parts of status."""
    conditions = [c.dump() for c in status.conditions or []]
    training = status.last_training or Training()
    running = training.outcome == "Running"
    conditions = set_condition(conditions, "Training", running,
                               (training.trigger_kind or "Idle").capitalize() if running
                               else training.outcome or "NeverTrained",
                               training.message or training.job or "no Job yet", generation)
    promoted, promoted_reason, promoted_message = _promotion_state(status)
    conditions = set_condition(conditions, "Promoted", promoted, promoted_reason,
                               promoted_message, generation)
    degraded = degraded_by(error, nats_error, child_error)
    conditions = set_condition(conditions, "Degraded", degraded is not None,
                               *(degraded or ("AsExpected", "")), generation)
    ready, ready_reason, ready_message = _readiness(status)
    conditions = set_condition(conditions, "Ready", ready, ready_reason, ready_message,
                               generation)
    phase = ("Paused" if paused else "Degraded" if degraded else "Training" if running
             else "Serving" if ready else "Failed" if ready_reason == "TrainingFailed"
             else "Pending")
    return status.updated(conditions=conditions, observed_generation=generation, phase=phase)


async def reconcile(runtime: Runtime, body: dict[str, Any]) -> Outcome:
    """Bring one SurgeModel's children and status to the state its spec and MLflow ask for.
    The work queue guarantees one reconcile per model at a time; nothing tells it why it
    runs: it reads what it needs to decide."""
    meta = body["metadata"]
    key: Key = (meta["namespace"], meta["name"])
    started = time.monotonic()
    metrics.RECONCILES.labels("queue").inc()
    try:
        return await _reconcile(runtime, body, key)
    finally:
        metrics.DURATION.observe(time.monotonic() - started)


@dataclass
class _Pass:
    """What the steps of one reconcile decided so far."""

    status: Status
    written: dict[str, Any]  # the status the API holds now (this pass may write twice)
    decisions: list[Decision] = dataclasses.field(default_factory=list)
    rejected: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    job_unwritten: bool = False  # this pass started a Job the API's status does not show yet

    def take(self, step: Step[Status] | None) -> None:
        if step is not None:
            self.status = self.status.merged(step.part)
            self.decisions.extend(step.decisions)


async def _reconcile(runtime: Runtime, body: dict[str, Any], key: Key) -> Outcome:
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    original = runtime.statuses.get(key) or {k: v for k, v in (body.get("status") or {}).items()
                                             if k != "kopf"}
    run = _Pass(Status.parse(original), original)
    try:
        try:
            spec = _spec_of(runtime, key, meta, body)
        except InvalidSpec:
            runtime.queue.add_all(runtime.catalog.set_usable(key, False))
            raise
        runtime.queue.add_all(runtime.catalog.set_usable(key, True))
        _check_registry_owner(runtime, key)
    except InvalidSpec as error:
        await _refuse(runtime, key, meta, original, run.status, generation, error)
        raise
    model = SurgeModel(name=key[1], namespace=key[0], uid=str(meta.get("uid", "")), spec=spec,
                       platform=runtime.platform, generation=generation)
    run.status = run.status.updated(retrain_subject=model.retrain_subject)
    annotations = dict(meta.get("annotations") or {})
    inputs = inputs_of(body.get("spec") or {}, annotations)
    inputs_changed = runtime.registry_inputs.setdefault(key, inputs) != inputs
    async def checkpoint() -> None:
        """A Job this pass started goes on record before any MLflow or evidence read that
        follows it: an operator killed during that read never starts a second Job for a spec
        changed meanwhile. Without such a read the pass's one write records it."""
        if not run.job_unwritten:
            return
        interim = finish(run.status, spec.paused, generation, None, runtime.nats_error).dump()
        await _write(runtime, key, meta, run.written, interim, run.decisions)
        run.written, run.decisions, run.job_unwritten = interim, [], False

    if not spec.paused:
        await _steps(runtime, key, model, run, annotations, meta.get("creationTimestamp"),
                     inputs_changed, checkpoint)
    runtime.registry_inputs[key] = inputs
    nats_change = _nats_decision(run.status, runtime.nats_error)
    if nats_change is not None:
        run.decisions.append(nats_change)
    kept = rejection(run.status.rejected_child, run.rejected, utcnow())
    run.status = run.status.updated(rejected_child=kept.part) if kept.part is not None \
        else run.status.without("rejected_child")
    run.decisions.extend(kept.decisions)
    child_error = kept.part.message if kept.part is not None else None
    finished = finish(run.status, spec.paused, generation, run.error, runtime.nats_error,
                      child_error)
    status = finished.dump()
    await _write(runtime, key, meta, run.written, status, run.decisions)
    job = (finished.last_training or Training()).job
    start_check = runtime.start_checks.get(f"{key[0]}/{job}") if job else None
    wait = requeue_after(runtime.settings, key, spec, finished, utcnow(),
                         rollout_next=runtime.rollout_next.get(key), start_check=start_check)
    return Outcome(status, wait, run.error or child_error)


async def _refuse(runtime: Runtime, key: Key, meta: dict[str, Any], original: dict[str, Any],
                  status: Status, generation: int, error: InvalidSpec) -> None:
    """Write Failed with the spec's fault in the Ready condition (Event when it is news)."""
    conditions = set_condition([c.dump() for c in status.conditions or []], "Ready", False,
                               "InvalidSpec", str(error), generation)
    refused = status.updated(conditions=conditions, phase="Failed",
                             observed_generation=generation).dump()
    decisions = [Decision("InvalidSpec", str(error), True)] if refused != original else []
    await _write(runtime, key, meta, original, refused, decisions)


async def _steps(runtime: Runtime, key: Key, model: SurgeModel, run: _Pass,
                 annotations: dict[str, str], created_at: str | None,
                 inputs_changed: bool, checkpoint: Callable[[], Awaitable[None]]) -> None:
    """Job outcome, registry, new training, live rollout and predictor steps of an unpaused
    model. MLflow is read before a Job starts (triggers never depend on it), so a new model's
    Job and its first registry read share one status write."""
    now = utcnow()
    grace = timedelta(seconds=runtime.settings.job_start_grace_seconds)
    ended = await observe_job(runtime.kube, model, run.status.last_training, runtime.children,
                              now, grace, runtime.start_checks)
    run.take(ended)
    job_finished = ended is not None and ended.part.last_training is not None and \
        ended.part.last_training.outcome != "Running"
    due = due_work(runtime.settings, key, run.status, inputs_changed=inputs_changed,
                   job_finished=job_finished,
                   announced=runtime.announced.get(model.registered_model),
                   rollout_next=runtime.rollout_next.get(key), now=now)
    registry = run.status.registry
    _still_there(runtime, key)
    if due.registry:
        read, run.error = await _registry_step(runtime, model, run.status, annotations, now)
        run.take(read)
    elif registry is not None and registry.error:
        run.error = registry.error
    _still_there(runtime, key)  # the registry read may have been slow
    before = (run.status.last_training or Training()).job
    run.take(await _guarded(start_training(runtime.kube, model, run.status, annotations,
                                           parse_time(created_at) or now, now),
                            "trainer Job", run.rejected))
    run.job_unwritten = (run.status.last_training or Training()).job != before
    run.error = await _serving_steps(runtime, key, model, now, due.rollout, run, checkpoint)
    run.take(await _guarded(sync_signals(
        runtime.kube, model, run.status.signals,
        runtime.catalog.bridge_owner(model.spec.signals_subject), runtime.children),
        "signal bridge", run.rejected))


def _still_there(runtime: Runtime, key: Key) -> None:
    """Raise ModelGone when the model was deleted meanwhile: nothing more is made for it."""
    if key not in runtime.catalog.bodies:
        raise ModelGone(key)


async def _serving_steps(runtime: Runtime, key: Key, model: SurgeModel, now: datetime,
                         rollout_due: bool, run: _Pass,
                         checkpoint: Callable[[], Awaitable[None]]) -> str | None:
    """Live rollout and predictor; the MLflow error, if any (also the registry's, if any)."""
    error = run.error
    if error is None and run.status.rollout is not None and rollout_due:
        await checkpoint()
        runtime.rollout_next[key] = next_rollout_check(runtime.settings, key, now)
        try:  # the live rollout reads NATS and MLflow: on its own clock, like the registry
            run.take(await _guarded(sync_rollout(runtime, model, run.status, now),
                                    "challenger", run.rejected))
        except RegistryUnavailable as failure:
            error = str(failure)
        removed = await _guarded(remove_challenger(runtime, model, run.status.rollout),
                                 "challenger", run.rejected)
        if removed is not None:
            run.status = run.status.updated(rollout=removed)
    served = await _guarded(sync_predictor(runtime.kube, model, run.status, now,
                                           runtime.children), "predictor", run.rejected)
    if served is None or not served.applied:
        return error
    run.take(served.step)
    health = _judge_predictor(model, run.status, served, now)
    if health.move is None:
        run.take(Step(health.part, health.decisions))
    elif error is None:  # MLflow is down: the revert waits for it
        await checkpoint()
        try:
            run.take(await enact(runtime, model, health, now))
            again = await sync_predictor(runtime.kube, model, run.status, now, runtime.children)
            run.take(again.step)
            rolled = _judge_predictor(model, run.status, again, now)
            if rolled.move is None:
                run.take(Step(rolled.part, rolled.decisions))
        except RegistryUnavailable as failure:
            error = str(failure)
    return error


def _judge_predictor(model: SurgeModel, status: Status, served: Served,
                     now: datetime) -> ChampionDecision:
    return decide(ChampionInputs(model, status, PredictorHealth(served.available,
                                                                served.exceeded), now))


def _check_registry_owner(runtime: Runtime, key: Key) -> None:
    """Two SurgeModels never share an MLflow model or a retrain subject by accident (staging
    would serve production's champion, or retrain on its requests): the younger one is refused
    until it names its own."""
    catalog = runtime.catalog
    if key not in catalog.bodies:
        raise ModelGone(key)
    name, subject = catalog.registered_name(key), catalog.retrain_subject(key)
    own_name = f"pulsar-{key[0]}-{key[1]}"
    for field, what, owner, example in (
            ("registeredModel", f"MLflow model {name!r} belongs to",
             catalog.registry_owner(name), own_name),
            ("retrainSubject", f"NATS subject {subject!r} retrains",
             catalog.subject_owner(subject), model_retrain_subject(own_name, "", ""))):
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
    if problems := Policy.of(runtime.settings).problems(spec):
        raise InvalidSpec("; ".join(problems))
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


# When MLflow was last read: kept in memory and written with the next other change. Written
# alone, every registry poll was a status patch (and its watch event back) per model.
CHECK_TIMES = (("registry", "checkedAt"), ("promotion", "checkedAt"))


def _without_check_times(status: dict[str, Any]) -> dict[str, Any]:
    trimmed = dict(status)
    for part, key in CHECK_TIMES:
        if isinstance(trimmed.get(part), dict):
            trimmed[part] = {k: v for k, v in trimmed[part].items() if k != key}
    return trimmed


def status_patch(original: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch to write, None when only check times moved; a written patch carries
    the current check times (the API may hold older ones than `original`, kept in memory)."""
    if _without_check_times(status) == _without_check_times(original):
        return None
    patch = merge_patch(original, status)
    for part, key in CHECK_TIMES:
        value = (status.get(part) or {}).get(key) if isinstance(status.get(part), dict) else None
        if value is not None and patch.get(part, {}) is not None:
            patch[part] = {**patch.get(part, {}), key: value}
    return patch


async def _write(runtime: Runtime, key: Key, meta: dict[str, Any], original: dict[str, Any],
                 status: dict[str, Any], decisions: list[Decision]) -> None:
    """Patch status only when it changed, then post the decisions as Events."""
    patch = status_patch(original, status)
    if patch is not None:
        await runtime.kube.patch(SURGEMODELS, key[0], key[1], {"status": patch}, sub="status")
    runtime.statuses[key] = status
    metrics.observe_status(key, original, status)
    for decision in decisions:
        await post_event(runtime.kube, key[0], key[1], str(meta.get("uid", "")), decision)
