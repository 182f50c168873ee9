"""Training step of a reconcile: observe the running Job, start one Job per new trigger."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pulsar_operator import metrics
from pulsar_operator.builders import (
    SurgeModel,
    build_trainer_service_account,
    build_training_job,
    job_name,
)
from pulsar_operator.conditions import now_iso
from pulsar_operator.kube import EVENTS, JOBS, PODS, SERVICE_ACCOUNTS, Kube
from pulsar_operator.recorder import Decision
from pulsar_operator.triggers import TriggerState, next_trigger, parse_time, training_hash

# Container states no retry of the Job controller can cure: the pod spec itself is wrong, or
# the image cannot be pulled (after the start grace, a pull backoff counts as cannot-pull).
CANNOT_START = ("InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
                "CreateContainerError", "ErrImagePull", "ImagePullBackOff")


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


async def why_stuck(kube: Kube, job: dict[str, Any], started: datetime, now: datetime,
                    grace: timedelta) -> str | None:
    """Why a Job that had `grace` since `started` to start its pods has none running; None
    while it may yet."""
    meta, status = job["metadata"], job.get("status") or {}
    if now - started < grace or status.get("ready") or status.get("succeeded") or \
            status.get("failed"):
        return None
    if not status.get("active"):
        events = await kube.items(EVENTS, meta["namespace"],
                                  fields=f"involvedObject.uid={meta.get('uid', '')}")
        return refused_pods(events)
    pods = await kube.items(PODS, meta["namespace"],
                            labels=f"batch.kubernetes.io/job-name={meta['name']}")
    return unstartable_pod(pods)


async def observe_job(kube: Kube, model: SurgeModel, status: dict[str, Any],
                      decisions: list[Decision],
                      watched: dict[tuple[str, str, str], dict[str, Any]],
                      now: datetime, start_grace: timedelta) -> bool:
    """Update lastTraining from the Job (watch cache first, else GET); True when it finished.
    A Job whose pods cannot start is failed at once (and deleted, pods and all), instead of
    waiting out activeDeadlineSeconds: its reason goes to status and a Warning Event."""
    training = status.get("lastTraining") or {}
    if training.get("outcome") != "Running":
        return False
    job = watched.get(("Job", model.namespace, training["job"]))
    if job is None:
        job = await kube.get(JOBS, model.namespace, training["job"])
    outcome, message = job_outcome(job)
    if outcome == "Running" and job is not None:
        started = parse_time(training.get("startedAt")) or now
        stuck = await why_stuck(kube, job, started, now, start_grace)
        if stuck is not None:
            await kube.delete(JOBS, model.namespace, training["job"], "Background")
            outcome, message = "Failed", stuck
    if outcome == "Running":
        return False
    status["lastTraining"] = {**training, "outcome": outcome, "message": message,
                              "completedAt": now_iso()}
    decisions.append(Decision(f"Training{outcome}", f"Job {training['job']}: {message}",
                              outcome == "Failed"))
    return True


async def start_training(kube: Kube, model: SurgeModel, status: dict[str, Any],
                         annotations: dict[str, str], created: datetime, now: datetime,
                         decisions: list[Decision]) -> None:
    """Start the Job for the next trigger, or coalesce it into the Job already running."""
    spec = model.spec
    state = TriggerState.read(status, annotations, created)
    trigger = next_trigger(spec, model.generation, state, now,
                           annotations.get("forecasting.pulsar.dev/retrain-reason", ""))
    if trigger is None:
        return
    running = (status.get("lastTraining") or {}).get("outcome") == "Running"
    if running:
        if trigger.kind == "retrain":
            status["lastRetrainRequest"] = state.pending_request
            metrics.COALESCED.inc()
            decisions.append(Decision("RetrainCoalesced", f"request {state.pending_request} "
                                      "joins the training Job already running"))
        elif trigger.kind == "schedule":
            status["lastScheduledAt"] = trigger.at.isoformat()
        return
    manifest = build_training_job(model, trigger)
    if not model.platform.service_account:
        await kube.create(SERVICE_ACCOUNTS, build_trainer_service_account(model))
    created_now = await kube.create(JOBS, manifest)
    name = job_name(model, trigger)
    status["lastTraining"] = {"job": name, "triggerId": trigger.id, "triggerKind": trigger.kind,
                              "specHash": training_hash(spec), "startedAt": now_iso(),
                              "outcome": "Running"}
    status["lastTrigger"] = {"kind": trigger.kind, "id": trigger.id, "reason": trigger.reason,
                             "at": trigger.at.isoformat()}
    if trigger.kind == "retrain":
        status["lastRetrainRequest"] = state.pending_request
    if trigger.kind == "schedule" or "lastScheduledAt" not in status:
        status["lastScheduledAt"] = trigger.at.isoformat()
    metrics.TRIGGERS.labels(trigger.kind).inc()
    verb = "started" if created_now else "already existed (adopted after a restart)"
    decisions.append(Decision("TrainingStarted", f"Job {name} {verb}: {trigger.reason}"))
