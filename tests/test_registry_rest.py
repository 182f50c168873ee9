"""The operator's REST registry against a real `mlflow server`: the same answers as MLflow's own
client (`Registry`), credentials as MLflow reads them, outages and refusals told apart, and an
operator process that never imports mlflow, pandas or pyarrow."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pulsar_core.registry_rest as rest
from pulsar_core.registry import Registry, RegistryUnavailable
from pulsar_core.registry_rest import RegistryError, RestRegistry, open_registry
from tests.support.auth_proxy import auth_proxy
from tests.support.services import free_port, running_mlflow_server

MODEL = "pulsar-resttown-eco"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server holding MODEL with five tagged versions, none under an alias."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-rest")) as url:
        client = Registry(url)
        for index in range(5):
            client.create_version(MODEL, f"s3://bucket/model-{index}", run_id="",
                                  tags={"pulsar.run_key": f"key-{index}", "n": str(index)})
        yield url


def test_the_answers_are_mlflows_own(server: str) -> None:
    mlflow, ours = Registry(server), RestRegistry(server)
    assert ours.versions(MODEL) == mlflow.versions(MODEL)
    assert [v.version for v in ours.versions(MODEL)] == ["5", "4", "3", "2", "1"]
    assert ours.versions(MODEL)[0].tags == {"pulsar.run_key": "key-4", "n": "4"}
    assert ours.get_version(MODEL, "3") == mlflow.get_version(MODEL, "3")
    assert ours.versions("pulsar-nowhere-eco") == mlflow.versions("pulsar-nowhere-eco") == []
    assert ours.get_alias("pulsar-nowhere-eco") is None


def test_moving_the_alias_is_seen_by_mlflows_client(server: str) -> None:
    mlflow, ours = Registry(server), RestRegistry(server)
    ours.set_alias(MODEL, "2")
    assert mlflow.get_alias(MODEL) == ours.get_alias(MODEL)
    assert ours.get_alias(MODEL) is not None and ours.get_alias(MODEL).version == "2"
    ours.set_alias(MODEL, "4")
    assert mlflow.get_alias(MODEL).version == "4"
    assert "champion" in ours.get_version(MODEL, "4").aliases
    assert ours.get_alias(MODEL, "challenger") is None


def test_every_page_of_versions_is_read(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest, "PAGE", 2)
    assert [v.version for v in RestRegistry(server).versions(MODEL)] == ["5", "4", "3", "2", "1"]


def test_a_refusal_is_not_an_outage(server: str) -> None:
    with pytest.raises(RegistryError, match="RESOURCE_DOES_NOT_EXIST"):
        RestRegistry(server).get_version(MODEL, "99")
    with pytest.raises(RegistryUnavailable, match="unavailable"):
        RestRegistry(f"http://127.0.0.1:{free_port()}").versions(MODEL)


def test_credentials_come_from_mlflows_variables_or_the_uri(server: str) -> None:
    with auth_proxy(server) as proxy:
        with pytest.raises(RegistryError, match="401") as refused:
            RestRegistry(proxy.url, environ={}).versions(MODEL)
        assert proxy.password not in str(refused.value)
        by_env = RestRegistry(proxy.url, environ={"MLFLOW_TRACKING_USERNAME": proxy.user,
                                                  "MLFLOW_TRACKING_PASSWORD": proxy.password})
        assert len(by_env.versions(MODEL)) == 5
        by_uri = RestRegistry(proxy.with_credentials(), environ={})
        assert by_uri.get_version(MODEL, "1").version == "1"
        assert proxy.password not in by_uri._base  # the URI's credentials travel as a header


def test_a_local_store_keeps_mlflows_client(tmp_path: Path) -> None:
    assert type(open_registry(f"sqlite:///{tmp_path / 'm.db'}")) is Registry
    assert type(open_registry("https://mlflow.example")) is RestRegistry


def test_the_operator_process_imports_neither_mlflow_nor_pandas() -> None:
    script = ("import sys, pulsar_operator.handlers, pulsar_operator.cli\n"
              "from pulsar_core.registry_rest import open_registry\n"
              "open_registry('http://127.0.0.1:1')\n"
              "print(sorted(m for m in ('mlflow', 'pandas', 'pyarrow', 'scipy', 'numpy')"
              " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out
