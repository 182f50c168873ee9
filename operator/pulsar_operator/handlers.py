"""kopf registration: every handler guards, delegates to a domain module, translates errors."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
from typing import Any

import kopf

from pulsar_core.registry_rest import open_registry
from pulsar_operator import metrics
from pulsar_operator.config import OperatorSettings, load_settings
from pulsar_operator.credentials import ChildCredentials, without_credentials
from pulsar_operator.domain import Platform
from pulsar_operator.kube import Kube, KubeError
from pulsar_operator.leader import LeaderElection
from pulsar_operator.login import connection_info
from pulsar_operator.names import GROUP, MANAGER, PLURAL, VERSION
from pulsar_operator.nats_link import run_nats
from pulsar_operator.reconciler import ModelGone, reconcile
from pulsar_operator.runtime import Key, Runtime, slim
from pulsar_operator.spec import InvalidSpec
from pulsar_operator.training import job_outcome
from pulsar_operator.workqueue import WorkQueue

RESOURCE: dict[str, Any] = {"group": GROUP, "version": VERSION, "plural": PLURAL}
MANAGED = {"app.kubernetes.io/managed-by": MANAGER}
log = logging.getLogger(__name__)


def _settings(memo: kopf.Memo) -> OperatorSettings:
    if memo.get("settings") is None:
        memo["settings"] = load_settings()
    settings: OperatorSettings = memo["settings"]
    return settings


def _login(config: OperatorSettings, settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    return connection_info(config.kube_api_url, settings, config.service_account_dir)


@kopf.on.login()
async def operator_login(memo: kopf.Memo, settings: kopf.OperatorSettings,
                         **_: Any) -> kopf.ConnectionInfo:
    return _login(_settings(memo), settings)


def platform_of(config: OperatorSettings) -> Platform:
    """The wiring children get: bare URIs, credentials only by Secret reference."""
    credentials = ChildCredentials(
        config.mlflow_credentials_secret, config.nats_credentials_secret,
        config.nats_tls_secret, config.nats_tls_client_certificate, config.s3_credentials_secret,
        config.nats_creds_secret, config.nats_nkey_secret)
    for variable, uri, secret in (
            ("PULSAR_MLFLOW_TRACKING_URI", config.mlflow_tracking_uri,
             config.mlflow_credentials_secret),
            ("PULSAR_NATS_URL", config.nats_url, config.nats_credentials_secret)):
        if uri and without_credentials(uri) != uri and not secret:
            log.warning("%s carries credentials; trainers, predictors and bridges get the URL "
                        "without them (a tenant picks their images): name a Secret in "
                        "the chart's credentials values for them", variable)
    return Platform(config.mlflow_tracking_uri, config.nats_url,
                    config.trainer_service_account, credentials, config.predictor_http())


@kopf.on.startup()
async def operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo,
                           **_: Any) -> None:
    config = _settings(memo)
    settings.peering.standalone = True  # one replica acts through our Lease, not kopf peering
    settings.posting.enabled = False  # our own recorder posts Events; kopf's logs stay logs
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    info = _login(config, settings)
    kube = Kube(info, limit=config.workers * 2, relogin=lambda: _login(config, settings))
    runtime = Runtime(settings=config, kube=kube,
                      registry=open_registry(config.mlflow_tracking_uri),
                      platform=platform_of(config))
    memo["runtime"] = runtime
    metrics.count_tasks_of(asyncio.get_running_loop())
    if config.standalone:
        metrics.LEADER.set(1)  # the one replica acts: the alerts that count the leader's see it
        await _start_acting(runtime)
        return
    runtime.election = LeaderElection(
        kube, config.lease_namespace or info.default_namespace or "default", config.lease_name,
        config.identity or f"{os.environ.get('POD_ID') or socket.gethostname()}-{os.getpid()}",
        config.lease_seconds, config.lease_renew_seconds)
    runtime.tasks.append(asyncio.create_task(runtime.election.run(
        lambda: _start_acting(runtime), lambda: _stop_acting(runtime))))


async def _start_acting(runtime: Runtime) -> None:
    """The leader's loops: the workers and the NATS consumer; then look at everything."""
    config = runtime.settings
    # a fresh queue: a key a cancelled worker held must not stay held across leaderships
    runtime.queue = WorkQueue(base_delay=1.0, max_delay=config.max_backoff_seconds)
    runtime.acting += [asyncio.create_task(_worker(runtime)) for _ in range(config.workers)]
    if config.nats_url:
        runtime.acting.append(asyncio.create_task(run_nats(runtime, config.nats_url)))
    runtime.statuses.clear()  # another replica may have written status meanwhile
    runtime.queue.add_all(list(runtime.catalog.bodies))


async def _stop_acting(runtime: Runtime) -> None:
    tasks, runtime.acting = runtime.acting, []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # NATS closes in its task


@kopf.on.cleanup()
async def operator_cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    await _stop_acting(runtime)
    if runtime.election is not None:
        try:
            await runtime.election.release()  # a standby takes over at once
        except KubeError as error:
            log.warning("could not release the leader Lease: %s", error)
    for task in runtime.tasks:
        task.cancel()
    await asyncio.gather(*runtime.tasks, return_exceptions=True)
    await runtime.kube.close()


async def _worker(runtime: Runtime) -> None:
    """Take a key, reconcile it, answer the queue: its requeue_after on success, a per-key
    exponential backoff on failure, nothing for an invalid spec (its next edit queues it)."""
    queue = runtime.queue
    while True:
        key, waited = await queue.get()
        metrics.QUEUE_LAG.observe(waited)
        metrics.QUEUE_DEPTH.set(queue.depth())
        try:
            body = runtime.catalog.bodies.get(key)  # read once the key is ours (D2)
            if body is None:
                continue
            outcome = await reconcile(runtime, body)
        except (InvalidSpec, ModelGone) as stop:
            if isinstance(stop, InvalidSpec):
                metrics.ERRORS.labels("invalid_spec").inc()  # in status and an Event already
            queue.forget(key)
        except KubeError as error:
            metrics.ERRORS.labels("kubernetes").inc()
            log.warning("reconcile of %s/%s: %s; retrying in %.0fs", *key, error,
                        queue.retry(key), extra={"namespace": key[0], "model": key[1],
                                                 "reason": "KubernetesError"})
        except Exception:  # a worker must survive any single model's failure
            metrics.ERRORS.labels("unexpected").inc()
            log.exception("reconcile of %s/%s failed; retrying in %.0fs", *key,
                          queue.retry(key), extra={"namespace": key[0], "model": key[1],
                                                   "reason": "UnexpectedError"})
        else:
            queue.forget(key)
            queue.schedule(key, outcome.requeue_after)
        finally:
            queue.done(key)


def needs_reconcile(previous: dict[str, Any] | None, body: dict[str, Any]) -> bool:
    """New to us, a new spec generation, or new annotations (retrain, approval); not the
    status patches the operator itself writes."""
    if previous is None:
        return True
    old, new = previous.get("metadata") or {}, body.get("metadata") or {}
    return (old.get("generation") != new.get("generation")
            or previous.get("spec") != body.get("spec")
            or old.get("annotations") != new.get("annotations")
            or bool(new.get("deletionTimestamp")) != bool(old.get("deletionTimestamp")))


@kopf.on.event(**RESOURCE)
async def surgemodel_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """The only SurgeModel handler: keep the catalog, queue what changed. kopf is our watch
    stream, not our state store: no change handlers, so kopf writes no progress or diff-base
    annotations and a standby replica never touches the objects."""
    runtime: Runtime | None = memo.get("runtime")
    body = event.get("object") or {}
    if runtime is None or not body.get("metadata"):
        return
    meta = body["metadata"]
    key: Key = (meta["namespace"], meta["name"])
    if event.get("type") == "DELETED":
        catalog = runtime.catalog
        sharing = ([*catalog.by_registered_model(catalog.registered_name(key)),
                    *catalog.by_retrain_subject(catalog.retrain_subject(key)),
                    *catalog.bridge_peers(key)]
                   if key in catalog.bodies else [])
        runtime.forget(key)  # its queue entry and backoff too
        runtime.queue.add_all(k for k in sharing if k != key)  # a refused one may own it now
        return
    previous = runtime.catalog.bodies.get(key)
    peers = runtime.catalog.bridge_peers(key)
    runtime.catalog.put(copy.deepcopy(dict(body)))
    if peers != runtime.catalog.bridge_peers(key):  # a bridge's scope gained or lost a model:
        runtime.queue.add_all(set(peers + runtime.catalog.bridge_peers(key)) - {key})  # re-own
    if previous is None:  # an older model may have arrived late: the owners of its names
        catalog = runtime.catalog  # are decided again, and a refusal names the right one
        runtime.queue.add_all({*catalog.by_registered_model(catalog.registered_name(key)),
                               *catalog.by_retrain_subject(catalog.retrain_subject(key))} - {key})
    if needs_reconcile(previous, dict(body)):
        runtime.queue.add(key)


def _what_matters(kind: str, body: dict[str, Any] | None) -> Any:
    """The part of a child a reconcile reads: a Job's outcome; a Deployment's spec and rollout
    progress; a Service's spec. Other churn (pod counts, timestamps) queues nothing."""
    if body is None:
        return None
    if kind == "Job":
        return job_outcome(body)[0]
    if kind == "Deployment":
        status = body.get("status") or {}
        progress = [status.get(field) for field in ("observedGeneration", "readyReplicas",
                                                    "updatedReplicas", "availableReplicas")]
        reasons = sorted((c.get("type"), c.get("reason")) for c in status.get("conditions") or [])
        return (body.get("metadata") or {}).get("generation"), body.get("spec"), progress, \
            reasons
    return body.get("spec")


def _enqueue_owner(event: kopf.RawEvent, memo: kopf.Memo) -> None:
    runtime: Runtime | None = memo.get("runtime")
    body: dict[str, Any] = dict(event.get("object") or {})
    meta: dict[str, Any] = body.get("metadata") or {}
    if runtime is None or not meta.get("name"):
        return
    kind = str(body.get("kind"))
    child = (kind, meta["namespace"], meta["name"])
    previous = runtime.children.get(child)
    if event.get("type") == "DELETED":
        runtime.children.pop(child, None)
        current = None
    else:  # a Job is read for its outcome only; a Deployment is compared with the manifest
        current = copy.deepcopy(slim(body, ("backoffLimit",) if kind == "Job" else None))
        runtime.children[child] = current
    if previous is not None and current is not None and \
            _what_matters(kind, previous) == _what_matters(kind, current):
        return
    if previous is None and current is not None and not (
            kind == "Job" and job_outcome(current)[0] != "Running"):
        return  # first sight of a child a reconcile just made (or the start-up pass reads)
    owners: list[dict[str, Any]] = meta.get("ownerReferences") or []
    for owner in owners:
        if owner.get("kind") == "SurgeModel":
            runtime.queue.add((meta["namespace"], owner["name"]))


async def child_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A Job or a predictor Deployment, Service, PodDisruptionBudget or autoscaler changed or
    was deleted: reconcile its model (finished Jobs mean a new version; the rest is readiness
    or repair)."""
    _enqueue_owner(event, memo)


for _group, _version, _plural in (("batch", "v1", "jobs"), ("apps", "v1", "deployments"),
                                  ("", "v1", "services"),
                                  ("policy", "v1", "poddisruptionbudgets"),
                                  ("autoscaling", "v2", "horizontalpodautoscalers")):
    kopf.on.event(_group, _version, _plural, labels=MANAGED)(child_event)
