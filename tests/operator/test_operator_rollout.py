"""Shadow rollout over KMock, a real nats-server and a real MLflow: a gate-passed version runs as
a challenger beside the champion; score events on PULSAR_SCORES decide promote / retire; a new
champion that regresses live is rolled back. The score events are what predictors publish."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import numpy as np

from pulsar_core.live_scores import ForecastScores, ensure_scores_stream, scores_subject
from tests.operator.conftest import (
    DEPLOYMENTS,
    GOOD,
    NS,
    SM,
    champion_version,
    events_of,
    eventually,
    objects,
    register_version,
    running_operator,
    status_of,
    surge_model,
)

REGISTERED = "pulsar-tehran-eco"
ROLLOUT = {"strategy": "shadow", "minScoredForecasts": 100, "minDurationSeconds": 0,
           "marginPct": 2, "rollbackRegressionPct": 10}
T0 = datetime(2025, 3, 1, 8, tzinfo=UTC)


def _events(version: str, mae: float, periods: range, seed: int) -> list[ForecastScores]:
    rng = np.random.default_rng(seed)
    return [ForecastScores(model_name=REGISTERED, version=version, horizon_minutes=h,
                           period_start=T0 + timedelta(minutes=7.5 * p),
                           errors={f"{x}:1": float(abs(rng.normal(mae, 0.2)))
                                   for x in range(20)})
            for p in periods for h in (30.0, 60.0)]


async def _publish(url: str, events: list[ForecastScores]) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    await ensure_scores_stream(js)
    for event in events:
        await js.publish(scores_subject("tehran", "eco"), event.model_dump_json().encode(),
                         headers={"Nats-Msg-Id": event.msg_id()})
    await client.close()


def _challenger(server: Any) -> dict[str, Any] | None:
    return next((d for d in objects(server, DEPLOYMENTS)
                 if d["metadata"]["name"] == "tehran-eco-challenger"), None)


def _rollout(server: Any) -> dict[str, Any]:
    return dict(status_of(server, "tehran-eco").get("rollout") or {})


async def _shadowing(server: Any, mlflow_uri: str, better: dict[float, Any]) -> str:
    version = register_version(mlflow_uri, REGISTERED, better)
    await eventually(lambda: _rollout(server).get("phase") == "Shadowing", what="Shadowing")
    challenger = await eventually(lambda: _challenger(server), what="challenger Deployment")
    env = {e["name"]: e.get("value") for e in
           challenger["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PULSAR_ROLE"] == "shadow" and env["PULSAR_MODEL_VERSION"] == version
    labels = challenger["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "challenger"  # the Service never selects it
    assert champion_version(mlflow_uri, REGISTERED) == "1"
    return version


BETTER = {h: type(s)(h, s.mae * 0.9, s.persistence_mae, s.baseline_mae, s.coverage)
          for h, s in GOOD.items()}


def _champion_v1_with_shadow_rollout(server: Any, mlflow_uri: str) -> None:
    """Version 1 registered (it becomes champion directly: nothing to shadow against yet)."""
    register_version(mlflow_uri, REGISTERED, GOOD)
    server.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco", rollout=ROLLOUT,
                                                       training={"horizonsMinutes": [30, 60]})


async def test_better_challenger_is_promoted_then_rolled_back_on_live_regression(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    _champion_v1_with_shadow_rollout(k8s, mlflow_uri)
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == "1")
        version = await _shadowing(k8s, mlflow_uri, BETTER)
        # half the evidence: no verdict on a partial sample
        await _publish(nats_server.url, _events("1", 4.0, range(0, 2), 1)
                       + _events(version, 3.0, range(0, 2), 2))
        await eventually(lambda: (_rollout(k8s).get("horizons") or [{}])[0].get("scored") == 40)
        assert _rollout(k8s)["verdict"] == "wait" and champion_version(mlflow_uri,
                                                                       REGISTERED) == "1"
        await _publish(nats_server.url, _events("1", 4.0, range(2, 8), 3)
                       + _events(version, 3.0, range(2, 8), 4))
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == version,
                         what=f"promoted on live evidence {_rollout(k8s)}")
        rollout = await eventually(lambda: _rollout(k8s).get("phase") == "Watching"
                                   and _rollout(k8s))
        first = rollout["horizons"][0]
        assert first["scored"] == 160 and first["periodsWon"] == 8
        assert first["challengerLiveMae"] < first["championLiveMae"]
        assert first["pValue"] < 0.05 and "sign test" in rollout["test"]
        await eventually(lambda: (_challenger(k8s) or {})["spec"]["replicas"] == 0,
                         what="challenger scaled to zero")
        # live accuracy drops after the promotion: 20% worse than v1's preceding window
        await _publish(nats_server.url, _events(version, 4.8, range(8, 14), 5))
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == "1",
                         what="rolled back")
        await eventually(lambda: _rollout(k8s).get("phase") == "RolledBack")
        status = status_of(k8s, "tehran-eco")
        assert status["challenger"]["version"] == version and not status["challenger"]["passed"]
        rollout_condition = next(c for c in status["conditions"] if c["type"] == "Rollout")
        assert rollout_condition["status"] == "False" and "regressed" in rollout_condition[
            "message"]
        await eventually(lambda: {"ShadowStarted", "ShadowPromoted", "RolledBack"}
                         <= {e["reason"] for e in events_of(k8s, "tehran-eco")}, what="Events")


async def test_worse_challenger_is_retired_and_never_promoted(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    _champion_v1_with_shadow_rollout(k8s, mlflow_uri)
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == "1")
        version = await _shadowing(k8s, mlflow_uri, BETTER)
        await _publish(nats_server.url, _events("1", 3.0, range(0, 8), 1)
                       + _events(version, 3.5, range(0, 8), 2))
        await eventually(lambda: _rollout(k8s).get("phase") == "Retired", what="retired")
        status = status_of(k8s, "tehran-eco")
        assert champion_version(mlflow_uri, REGISTERED) == "1"
        assert status["challenger"]["passed"] is False
        assert status["challenger"]["reason"].startswith("retired after shadow")
        await eventually(lambda: "ShadowRetired" in {e["reason"]
                                                     for e in events_of(k8s, "tehran-eco")})
        await eventually(lambda: (_challenger(k8s) or {})["spec"]["replicas"] == 0,
                         what="challenger scaled to zero")


async def test_an_operator_restart_mid_shadow_loses_no_evidence_and_decides_nothing_early(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    """Half the evidence arrives, the operator stops; more arrives while it is down; a new
    operator (empty memory) reads the durable stream again and judges on all of it."""
    _champion_v1_with_shadow_rollout(k8s, mlflow_uri)
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == "1")
        version = await _shadowing(k8s, mlflow_uri, BETTER)
        await _publish(nats_server.url, _events("1", 4.0, range(0, 3), 1)
                       + _events(version, 3.0, range(0, 3), 2))
        await eventually(lambda: (_rollout(k8s).get("horizons") or [{}])[0].get("scored") == 60)
    assert _rollout(k8s)["verdict"] == "wait" and champion_version(mlflow_uri, REGISTERED) == "1"
    await _publish(nats_server.url, _events("1", 4.0, range(3, 8), 3)
                   + _events(version, 3.0, range(3, 8), 4))
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == version,
                         what=f"promoted after the restart {_rollout(k8s)}")
        first = (await eventually(lambda: _rollout(k8s).get("phase") == "Watching"
                                  and _rollout(k8s)))["horizons"][0]
        assert first["scored"] == 160 and first["periodsWon"] == 8, first
