"""kopf registration: every handler guards, delegates to a domain module, translates errors."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf

from pulsar_core.registry import Registry
from pulsar_operator import metrics
from pulsar_operator.builders import MANAGER, Platform
from pulsar_operator.config import OperatorSettings, load_settings
from pulsar_operator.kube import Kube, KubeError
from pulsar_operator.login import connection_info
from pulsar_operator.nats_link import run_nats
from pulsar_operator.reconciler import reconcile
from pulsar_operator.runtime import Runtime
from pulsar_operator.spec import GROUP, PLURAL, VERSION, InvalidSpec
from pulsar_operator.training import job_outcome

RESOURCE: dict[str, Any] = {"group": GROUP, "version": VERSION, "plural": PLURAL}
MANAGED = {"app.kubernetes.io/managed-by": MANAGER}
log = logging.getLogger(__name__)


def _settings(memo: kopf.Memo) -> OperatorSettings:
    if memo.get("settings") is None:
        memo["settings"] = load_settings()
    return memo["settings"]


def _login(config: OperatorSettings, settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    return connection_info(config.kube_api_url, settings, config.service_account_dir)


@kopf.on.login()
async def operator_login(memo: kopf.Memo, settings: kopf.OperatorSettings,
                         **_: Any) -> kopf.ConnectionInfo:
    return _login(_settings(memo), settings)


@kopf.on.startup()
async def operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo,
                           **_: Any) -> None:
    config = _settings(memo)
    settings.peering.name = config.peering_name
    settings.peering.standalone = config.standalone or settings.peering.standalone
    settings.posting.enabled = False  # our own recorder posts Events; kopf's logs stay logs
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    kube = Kube(_login(config, settings), limit=config.workers * 2,
                relogin=lambda: _login(config, settings))
    runtime = Runtime(settings=config, kube=kube, registry=Registry(config.mlflow_tracking_uri),
                      platform=Platform(config.mlflow_tracking_uri, config.nats_url,
                                        config.trainer_service_account))
    memo["runtime"] = runtime
    metrics.count_tasks_of(asyncio.get_running_loop())
    runtime.tasks.append(asyncio.create_task(_ticker(runtime)))
    runtime.tasks += [asyncio.create_task(_worker(runtime)) for _ in range(config.workers)]
    if config.nats_url:
        runtime.tasks.append(asyncio.create_task(run_nats(runtime, config.nats_url)))


@kopf.on.cleanup()
async def operator_cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    for task in runtime.tasks:
        task.cancel()
    await asyncio.gather(*runtime.tasks, return_exceptions=True)  # NATS closes in its task
    await runtime.kube.close()


async def _ticker(runtime: Runtime) -> None:
    """The one periodic, level-triggered pass over all models (no task per object)."""
    while True:
        await asyncio.sleep(runtime.settings.resync_seconds)
        runtime.queue.add_all(list(runtime.catalog.bodies))


async def _worker(runtime: Runtime) -> None:
    while True:
        key, forced = await runtime.queue.take()
        body = runtime.catalog.bodies.get(key)
        if body is None:
            continue
        try:
            await reconcile(runtime, body, forced=forced, source="loop")
        except InvalidSpec:
            pass  # recorded in status and as an Event by the reconciler
        except KubeError as error:
            metrics.ERRORS.labels("kubernetes").inc()
            log.warning("reconcile of %s/%s: %s", *key, error)
        except Exception:  # a worker must survive any single model's failure
            metrics.ERRORS.labels("unexpected").inc()
            log.exception("reconcile of %s/%s failed", *key)


@kopf.on.event(**RESOURCE)
async def surgemodel_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    body = event.get("object") or {}
    if runtime is None or not body.get("metadata"):
        return
    if event.get("type") == "DELETED":
        meta = body["metadata"]
        runtime.forget((meta["namespace"], meta["name"]))
    else:
        runtime.catalog.put(copy.deepcopy(dict(body)))


@kopf.on.resume(**RESOURCE)
@kopf.on.create(**RESOURCE)
@kopf.on.update(**RESOURCE)
async def surgemodel_reconcile(body: kopf.Body, reason: str, memo: kopf.Memo,
                               **_: Any) -> None:
    """Create, update and resume are the same level-triggered reconcile."""
    runtime: Runtime = memo["runtime"]
    raw = copy.deepcopy(dict(body))
    runtime.catalog.put(raw)
    try:
        outcome = await reconcile(runtime, raw, forced=reason == "update", source=str(reason))
    except InvalidSpec as error:
        metrics.ERRORS.labels("invalid_spec").inc()
        raise kopf.PermanentError(str(error)) from error
    except KubeError as error:
        metrics.ERRORS.labels("kubernetes").inc()
        if error.retryable:
            raise kopf.TemporaryError(str(error), delay=5) from error
        raise kopf.PermanentError(str(error)) from error
    if outcome.retry_after is not None:
        raise kopf.TemporaryError(outcome.error or "dependency unavailable",
                                  delay=outcome.retry_after)


@kopf.on.delete(**RESOURCE, optional=True)
async def surgemodel_delete(namespace: str, name: str, memo: kopf.Memo, logger: Any,
                            **_: Any) -> None:
    """Children go with their ownerReferences; the operator only forgets the model."""
    memo["runtime"].forget((namespace, name))
    logger.info("SurgeModel deleted; Jobs and predictor are garbage-collected by ownership")


def _enqueue_owner(event: kopf.RawEvent, memo: kopf.Memo) -> None:
    runtime: Runtime | None = memo.get("runtime")
    body = event.get("object") or {}
    meta = body.get("metadata") or {}
    if runtime is not None and meta.get("name"):
        child = (str(body.get("kind")), meta["namespace"], meta["name"])
        if event.get("type") == "DELETED":
            runtime.children.pop(child, None)
        else:
            runtime.children[child] = copy.deepcopy(dict(body))
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "SurgeModel" and runtime is not None:
            finished = body.get("kind") == "Job" and job_outcome(body)[0] != "Running"
            runtime.queue.add((meta["namespace"], owner["name"]), registry=finished)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A trainer Job changed: reconcile its model (finished Jobs mean a new version)."""
    _enqueue_owner(event, memo)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A predictor changed: reconcile its model (readiness, failed rollouts)."""
    _enqueue_owner(event, memo)


@kopf.on.event("", "v1", "services", labels=MANAGED)
async def service_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A predictor Service changed or was deleted: reconcile its model (restore it)."""
    _enqueue_owner(event, memo)
