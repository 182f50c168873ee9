"""Push path (NATS model.registered -> promotion -> model.promoted), RBAC dump, settings."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from pulsar_operator import cli, rbac

from pulsar_core.events import MODEL_PROMOTED, MODEL_REGISTERED, ModelPromoted, ModelRegistered
from tests.operator.conftest import (
    GOOD,
    NS,
    ROOT_DIR,
    SM,
    champion_version,
    eventually,
    register_version,
    running_operator,
    status_of,
    surge_model,
)


async def test_registered_event_promotes_and_announces(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    client = await nats.connect(nats_server.url)
    promoted: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_promoted(msg: Any) -> None:
        await promoted.put(msg.data)

    await client.subscribe(MODEL_PROMOTED, cb=on_promoted)
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    # a poll interval far beyond the test: only the pushed event can cause the promotion
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url,
                                registry_poll_seconds=3600) as memo:
        await eventually(lambda: (status_of(k8s, "tehran-eco").get("registry") or {}).get(
            "checkedAt"), what="the first registry check")
        await eventually(lambda: memo["runtime"].publisher is not None, what="NATS connected")
        version = register_version(mlflow_uri, "pulsar-tehran-eco", GOOD)
        event = ModelRegistered(model_name="pulsar-tehran-eco", version=version, run_id="r")
        await client.publish(MODEL_REGISTERED, event.model_dump_json().encode())
        message = ModelPromoted.model_validate_json(await asyncio.wait_for(promoted.get(), 30))
        assert message.version == version and message.surge_model is not None
        assert champion_version(mlflow_uri, "pulsar-tehran-eco") == version
    await client.close()


def test_rbac_yaml_is_the_dump_of_the_rules() -> None:
    dumped = yaml.safe_load((ROOT_DIR / "operator" / "rbac.yaml").read_text())
    assert dumped == rbac.cluster_role()
    verbs = {(group, res): rule["verbs"] for rule in rbac.RULES
             for group in rule["apiGroups"] for res in rule["resources"]}
    # delete: only a Job whose pods cannot start (training.observe_job); never patch/update
    assert verbs[("batch", "jobs")] == ["get", "list", "watch", "create", "delete"]
    assert verbs[("", "pods")] == ["list"]
    assert verbs[("forecasting.pulsar.dev", "surgemodels/status")] == ["patch"]


def test_missing_settings_fail_fast_with_the_variable_named(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PULSAR_MLFLOW_TRACKING_URI", raising=False)
    assert cli.main([]) == 2
    assert "PULSAR_MLFLOW_TRACKING_URI" in capsys.readouterr().err


def test_no_kubernetes_credentials_exit_2_with_the_ways_to_give_them(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.setenv("PULSAR_MLFLOW_TRACKING_URI", "sqlite:///x.db")
    monkeypatch.setenv("PULSAR_SERVICE_ACCOUNT_DIR", str(tmp_path / "no-account"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    for name in ("PULSAR_KUBE_API_URL", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "no Kubernetes credentials" in err and "PULSAR_KUBE_API_URL" in err
    assert "Traceback" not in err
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert cli.main([]) == 2
    assert "KUBECONFIG names a missing file" in capsys.readouterr().err


def test_outside_a_pod_without_a_lease_namespace_exit_2_naming_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PULSAR_MLFLOW_TRACKING_URI", "sqlite:///x.db")
    monkeypatch.setenv("PULSAR_KUBE_API_URL", "http://127.0.0.1:1")  # kubectl proxy: no namespace
    for name in ("PULSAR_LEASE_NAMESPACE", "PULSAR_STANDALONE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main([]) == 2
    assert "PULSAR_LEASE_NAMESPACE" in capsys.readouterr().err
