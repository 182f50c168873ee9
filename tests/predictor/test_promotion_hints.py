"""Promotion events are hints: the predictor re-reads the registry and serves only what it says.

A real nats-server carries forged and genuine `pulsar.events.model.promoted` events to a
predictor following the `champion` alias of a real MLflow registry.
"""

from __future__ import annotations

import logging

import nats
from pulsar_predictor import create_app

from pulsar_core.events import MODEL_PROMOTED, ModelPromoted
from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL, register
from tests.predictor.client import eventually, serving


def _sample(runtime, name: str, **labels: str) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


def _events(runtime) -> float:
    outcomes = ("confirmed", "unconfirmed", "repeated", "served", "malformed", "lookup_failed")
    return sum(_sample(runtime, "pulsar_promotion_events_total", outcome=outcome)
               for outcome in outcomes)


async def _publish(url: str, versions: list[str]) -> None:
    client = await nats.connect(url)
    for version in versions:
        event = ModelPromoted(model_name=MODEL, version=version, previous_version="1")
        await client.publish(MODEL_PROMOTED, event.model_dump_json().encode())
    await client.flush()
    await client.close()


def _ignored(caplog, version: str) -> int:
    line = f"ignoring promotion event for version '{version}'"
    return sum(1 for record in caplog.records if record.getMessage().startswith(line))


async def test_forged_promotions_are_ignored_counted_logged_once_and_looked_up_once(
        mlflow_uri, tiny_bundle, nats_server, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="pulsar_predictor.promotions")
    registry = Registry(mlflow_uri)
    registry.set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    second, third = register(mlflow_uri, tiny_bundle), register(mlflow_uri, tiny_bundle)
    settings = ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                             nats_url=nats_server.url, alias_poll_seconds=3600)
    app = create_app(settings)
    async with serving(app) as client:
        runtime = app.state.runtime
        await eventually(lambda: runtime.slot.current is not None and runtime.feed.connected)
        # a real version the gate never promoted, named 50 times
        await _publish(nats_server.url, [second] * 50)
        await eventually(lambda: _events(runtime) == 50)
        assert runtime.slot.current.version == "1"
        assert (await client.get("/v1/model")).json()["model"]["version"] == "1"
        assert _sample(runtime, "pulsar_promotion_events_total", outcome="unconfirmed") == 1
        assert _sample(runtime, "pulsar_promotion_events_total", outcome="repeated") == 49
        assert _sample(runtime, "pulsar_promotion_lookups_total") == 1
        assert _ignored(caplog, second) == 1
        # 300 versions that do not exist, each sent twice, and a few that are no version
        unknown = [str(1000 + n) for n in range(300)]
        await _publish(nats_server.url, [*unknown, *unknown, "x", "1" * 40])
        await eventually(lambda: _events(runtime) == 652)
        lookups = _sample(runtime, "pulsar_promotion_lookups_total")
        assert lookups <= 1 + len(unknown)  # never one per message
        assert _sample(runtime, "pulsar_promotion_events_total", outcome="unconfirmed") == 301
        assert _sample(runtime, "pulsar_promotion_events_total", outcome="malformed") == 2
        assert all(_ignored(caplog, version) == 1 for version in unknown)
        await _publish(nats_server.url, unknown)  # within the period: no look-up at all
        await eventually(lambda: _events(runtime) == 952)
        assert _sample(runtime, "pulsar_promotion_lookups_total") == lookups
        assert runtime.slot.current.version == "1"
        # a genuine promotion: the registry names the version, the event only makes it sooner
        registry.set_alias(MODEL, third)
        await _publish(nats_server.url, [third])
        await eventually(lambda: runtime.slot.current.version == third)
        assert _sample(runtime, "pulsar_promotion_events_total", outcome="confirmed") == 1


async def test_an_event_naming_another_version_swaps_only_to_what_the_registry_names(
        mlflow_uri, tiny_bundle, nats_server) -> None:
    registry = Registry(mlflow_uri)
    registry.set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    second, third = register(mlflow_uri, tiny_bundle), register(mlflow_uri, tiny_bundle)
    settings = ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                             nats_url=nats_server.url, alias_poll_seconds=3600)
    app = create_app(settings)
    async with serving(app) as client:
        runtime = app.state.runtime
        await eventually(lambda: runtime.slot.current is not None and runtime.feed.connected)
        registry.set_alias(MODEL, second)
        await _publish(nats_server.url, [third])  # says 3; the registry says 2
        await eventually(lambda: runtime.slot.current.version == second)
        assert _sample(runtime, "pulsar_promotion_events_total", outcome="unconfirmed") == 1
        assert (await client.get("/v1/model")).json()["model"]["version"] == second


async def test_a_pinned_predictor_counts_promotions_and_never_follows_them(
        mlflow_uri, tiny_bundle, nats_server) -> None:
    registry = Registry(mlflow_uri)
    registry.set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    second = register(mlflow_uri, tiny_bundle)
    registry.set_alias(MODEL, second)
    settings = ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                             nats_url=nats_server.url, model_version="1",
                             alias_poll_seconds=3600)
    app = create_app(settings)
    async with serving(app):
        runtime = app.state.runtime
        await eventually(lambda: runtime.slot.current is not None and runtime.feed.connected)
        await _publish(nats_server.url, [second] * 3)
        await eventually(lambda: _sample(runtime, "pulsar_promotion_events_total",
                                         outcome="pinned") == 3)
        assert runtime.slot.current.version == "1"
        assert _sample(runtime, "pulsar_promotion_lookups_total") == 0
