"""Training step of a reconcile: observe the running Job, start one Job per new trigger."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pulsar_core.redact import redact
from pulsar_operator import metrics
from pulsar_operator.builders import (
    TRAINER_CONTAINER,
    build_trainer_service_account,
    build_training_job,
    job_name,
)
from pulsar_operator.clock import iso, parse_time
from pulsar_operator.domain import SurgeModel, Trigger
from pulsar_operator.kube import EVENTS, JOBS, PODS, SERVICE_ACCOUNTS, Kube
from pulsar_operator.names import RETRAIN_REASON_ANNOTATION
from pulsar_operator.recorder import Decision
from pulsar_operator.status import LastTrigger, Status, Step, Training
from pulsar_operator.triggers import TriggerState, next_trigger, training_hash

# Container states no retry of the Job controller can cure: the pod spec itself is wrong, or
# the image cannot be pulled (after the start grace, a pull backoff counts as cannot-pull).
CANNOT_START = ("InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
                "CreateContainerError", "ErrImagePull", "ImagePullBackOff")
QUOTE_LIMIT = 300  # characters of the trainer's line quoted in status and the Event


def job_outcome(job: dict[str, Any] | None) -> tuple[str, str]:
    """(Running|Succeeded|Failed, message) from a Job's status; a vanished Job failed."""
    if job is None:
        return "Failed", "the training Job no longer exists"
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            outcome = "Succeeded" if cond["type"] == "Complete" else "Failed"
            return outcome, cond.get("message") or cond.get("reason") or outcome
    if (status.get("succeeded") or 0) > 0:
        return "Succeeded", "the training Job completed"
    if (status.get("failed") or 0) > (job.get("spec") or {}).get("backoffLimit", 6):
        return "Failed", f"{status.get('failed')} pods failed"
    return "Running", "the training Job is running"


def _one_line(text: str) -> str:
    """The last non-empty line of a termination message (a log tail ends with the error),
    whitespace collapsed, redacted again and bounded to QUOTE_LIMIT characters."""
    lines = [line for line in text.splitlines() if line.strip()]
    line = redact(" ".join(lines[-1].split())) if lines else ""
    return line if len(line) <= QUOTE_LIMIT else line[:QUOTE_LIMIT - 1] + "…"


def _failed_trainers(pods: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """state.terminated of each trainer container that exited non-zero."""
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if container.get("name") == TRAINER_CONTAINER and terminated.get("exitCode"):
                yield terminated


def trainer_failure(pods: list[dict[str, Any]]) -> str | None:
    """The trainer's own word from the Job's latest failed pod: its exit code and the one line
    it wrote to its termination message (or its log tail, FallbackToLogsOnError); None when no
    failed trainer container carries a message."""
    said = [t for t in _failed_trainers(pods) if _one_line(t.get("message") or "")]
    if not said:
        return None
    latest = max(said, key=lambda t: t.get("finishedAt") or "")
    return f"trainer exited {latest['exitCode']}: {_one_line(latest['message'])}"


def refused_pods(events: list[dict[str, Any]]) -> str | None:
    """The Job controller's latest FailedCreate message: the API refused the Job's pods
    (quota, LimitRange, Pod Security, a webhook). The Job itself never says so."""
    refused = [e for e in events if e.get("reason") == "FailedCreate"]
    if not refused:
        return None
    latest = max(refused, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return f"pods cannot be created: {latest.get('message') or 'FailedCreate'}"


def unstartable_pod(pods: list[dict[str, Any]]) -> str | None:
    """The first container that cannot start (bad image, bad config), with the kubelet's word."""
    for pod in pods:
        status = pod.get("status") or {}
        for container in (status.get("initContainerStatuses") or []) + \
                (status.get("containerStatuses") or []):
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in CANNOT_START:
                return (f"pod {pod['metadata']['name']} cannot start: {waiting['reason']}: "
                        f"{waiting.get('message') or container.get('image', '')}")
    return None


def unscheduled_pod(pods: list[dict[str, Any]]) -> str | None:
    """The first pod the scheduler could not place, with its word (no node fits yet: a
    cluster autoscaler may still add one, so this is a wait, not a failure)."""
    for pod in pods:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return (f"pod {pod['metadata']['name']} waits for a node: "
                        f"{condition.get('message') or condition.get('reason') or 'unscheduled'}")
    return None


@dataclass(frozen=True)
class StartProblem:
    """Why a Job's pods are not running: `fatal` when no retry can cure it."""

    message: str
    fatal: bool


async def why_stuck(kube: Kube, job: dict[str, Any], started: datetime, now: datetime,
                    grace: timedelta) -> StartProblem | None:
    """Why a Job that had `grace` since `started` to start its pods has none running; None
    while it may yet, or when nothing is known to be wrong."""
    meta, status = job["metadata"], job.get("status") or {}
    if now - started < grace or status.get("ready") or status.get("succeeded") or \
            status.get("failed"):
        return None
    if not status.get("active"):
        events = await kube.items(EVENTS, meta["namespace"],
                                  fields=f"involvedObject.uid={meta.get('uid', '')}")
        refused = refused_pods(events)
        return StartProblem(refused, fatal=True) if refused else None
    pods = await kube.items(PODS, meta["namespace"],
                            labels=f"batch.kubernetes.io/job-name={meta['name']}")
    unstartable = unstartable_pod(pods)
    if unstartable is not None:
        return StartProblem(unstartable, fatal=True)
    unscheduled = unscheduled_pod(pods)
    return StartProblem(unscheduled, fatal=False) if unscheduled else None


def still_waiting(training: Training, problem: StartProblem | None, checked: bool,
                  job: dict[str, Any]) -> Step[Status] | None:
    """lastTraining.message while a Job waits for a node (a Warning when the reason is new),
    cleared once its pods run or a check finds nothing wrong; None when nothing changes."""
    if problem is not None and problem.message != training.message:
        return Step(Status(last_training=training.updated(message=problem.message)),
                    (Decision("TrainingPending", f"Job {training.job}: {problem.message}",
                              True),))
    running = bool((job.get("status") or {}).get("ready"))
    if training.message and problem is None and (running or checked):
        return Step(Status(last_training=training.updated(message=None)))
    return None


def failure_message(trainer: str | None, job_message: str) -> str:
    """A failed Job's message: the trainer's own word first, the Job controller's after."""
    return f"{trainer} ({job_message})" if trainer else job_message


def job_ended(training: Training, outcome: str, message: str, now: datetime) -> Step[Status]:
    """lastTraining once its Job ended (Succeeded or Failed), and the Event that says so."""
    ended = training.updated(outcome=outcome, message=message, completed_at=iso(now))
    return Step(Status(last_training=ended),
                (Decision(f"Training{outcome}", f"Job {training.job}: {message}",
                          outcome == "Failed"),))


def start_check_due(checks: dict[str, datetime], job: str, started: datetime, now: datetime,
                    grace: timedelta) -> bool:
    """Whether to ask the API why `job` has no running pod: at `grace` after it started, then
    with the wait doubling (at most hourly), so a Job left Pending (no node fits) costs a few
    lists over its life instead of one per reconcile. `checks` holds each Job's next check."""
    if now < checks.get(job, started + grace):
        return False
    checks[job] = now + min(max(grace, now - started), timedelta(hours=1))
    return True


async def observe_job(kube: Kube, model: SurgeModel, training: Training | None,
                      watched: dict[tuple[str, str, str], dict[str, Any]],
                      now: datetime, start_grace: timedelta,
                      start_checks: dict[str, datetime]) -> Step[Status] | None:
    """lastTraining from the Job (watch cache first, else GET) once it finished, or while it
    waits for a node; None while it runs. A Job whose pods cannot start is failed at once (and
    deleted, pods and all), instead of waiting out activeDeadlineSeconds: its reason goes to
    status and a Warning Event."""
    if training is None or training.outcome != "Running":
        return None
    name = str(training.job)
    job = watched.get(("Job", model.namespace, name))
    if job is None:
        job = await kube.get(JOBS, model.namespace, name)
    outcome, message = job_outcome(job)
    started = parse_time(training.started_at) or now
    check = f"{model.namespace}/{name}"
    if outcome == "Running" and job is not None:
        checked = start_check_due(start_checks, check, started, now, start_grace)
        problem = await why_stuck(kube, job, started, now, start_grace) if checked else None
        if problem is None or not problem.fatal:
            return still_waiting(training, problem, checked, job)
        await kube.delete(JOBS, model.namespace, name, "Background")
        outcome, message = "Failed", problem.message
    elif outcome == "Failed" and job is not None:
        pods = await kube.items(PODS, model.namespace,
                                labels=f"batch.kubernetes.io/job-name={name}")
        message = failure_message(trainer_failure(pods), message)
    if outcome == "Running":
        return None
    start_checks.pop(check, None)
    return job_ended(training, outcome, message, now)


def coalesced(trigger: Trigger, state: TriggerState, running: Training) -> Step[Status]:
    """A trigger that arrives while a Job runs joins it: it is recorded as handled. A spec
    change cannot join (the Job trains the old spec): it waits, said once."""
    if trigger.kind == "spec":
        if running.deferred == trigger.id:
            return Step(Status())
        return Step(Status(last_training=running.updated(deferred=trigger.id)), (
            Decision("RetrainDeferred", f"the training spec changed while Job {running.job} "
                     "runs; the new spec trains once it ends"),))
    if trigger.kind == "retrain":
        return Step(Status(last_retrain_request=state.pending_request),
                    (Decision("RetrainCoalesced", f"request {state.pending_request} "
                              "joins the training Job already running"),))
    if trigger.kind == "schedule":
        return Step(Status(last_scheduled_at=trigger.at.isoformat()))
    return Step(Status())


def started(model: SurgeModel, trigger: Trigger, state: TriggerState, status: Status,
            adopted: bool, now: datetime) -> Step[Status]:
    """lastTraining, lastTrigger and what the trigger consumed, once its Job exists."""
    name = job_name(model, trigger)
    part = Status(
        last_training=Training(job=name, trigger_id=trigger.id, trigger_kind=trigger.kind,
                               spec_hash=training_hash(model.spec), started_at=iso(now),
                               outcome="Running"),
        last_trigger=LastTrigger(kind=trigger.kind, id=trigger.id, reason=trigger.reason,
                                 at=trigger.at.isoformat()))
    if trigger.kind == "retrain":
        part = part.updated(last_retrain_request=state.pending_request)
    if trigger.kind == "schedule" or status.last_scheduled_at is None:
        part = part.updated(last_scheduled_at=trigger.at.isoformat())
    verb = "already existed (adopted after a restart)" if adopted else "started"
    return Step(part, (Decision("TrainingStarted", f"Job {name} {verb}: {trigger.reason}"),))


async def start_training(kube: Kube, model: SurgeModel, status: Status,
                         annotations: dict[str, str], created: datetime,
                         now: datetime) -> Step[Status] | None:
    """Start the Job for the next trigger, or coalesce it into the Job already running."""
    state = TriggerState.read(status.dump(), annotations, created)
    trigger = next_trigger(model.spec, model.generation, state, now,
                           annotations.get(RETRAIN_REASON_ANNOTATION, ""))
    if trigger is None:
        return None
    if status.last_training is not None and status.last_training.outcome == "Running":
        if trigger.kind == "retrain":
            metrics.COALESCED.inc()
        return coalesced(trigger, state, status.last_training)
    manifest = build_training_job(model, trigger)
    if not model.platform.service_account:
        await kube.create(SERVICE_ACCOUNTS, build_trainer_service_account(model))
    created_now = await kube.create(JOBS, manifest)
    metrics.TRIGGERS.labels(trigger.kind).inc()
    return started(model, trigger, state, status, not created_now, now)
