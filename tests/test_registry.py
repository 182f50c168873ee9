from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from pulsar_core.registry import RUN_KEY_TAG, Registry, RegistryUnavailable, is_unavailable
from tests.support.services import free_port, serving_in_thread


def _run_with_artifact(uri: str) -> str:
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_dict({"x": 1}, "model/x.json")
    return run.info.run_id


def test_versions_aliases_and_run_keys(mlflow_uri: str) -> None:
    registry = Registry(mlflow_uri)
    assert registry.versions("pulsar-x-y") == []
    assert registry.get_alias("pulsar-x-y") is None
    run_id = _run_with_artifact(mlflow_uri)
    first = registry.create_version("pulsar-x-y", f"runs:/{run_id}/model", run_id,
                                    {RUN_KEY_TAG: "k1"})
    second = registry.create_version("pulsar-x-y", f"runs:/{run_id}/model", run_id, {})
    assert [v.version for v in registry.versions("pulsar-x-y")] == [second.version, first.version]
    assert registry.version_for_run_key("pulsar-x-y", "k1") == registry.get_version(
        "pulsar-x-y", first.version)
    assert registry.version_for_run_key("pulsar-x-y", "nope") is None
    registry.set_alias("pulsar-x-y", first.version)
    champion = registry.get_alias("pulsar-x-y")
    assert champion is not None and champion.version == first.version
    registry.set_version_tag("pulsar-x-y", second.version, "a", "b")
    assert registry.get_version("pulsar-x-y", second.version).tags["a"] == "b"


@pytest.fixture
def quick_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """One retry without backoff and a short timeout, so outages are seen in a second."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


class _Answers(BaseHTTPRequestHandler):
    """Answers every request with the server's fixed status and body, counting them."""

    def _answer(self) -> None:
        self.server.seen += 1  # type: ignore[attr-defined]
        status, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _http_server(status: int, body: bytes) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Answers)
    server.answer, server.seen = (status, body), 0  # type: ignore[attr-defined]
    with serving_in_thread(server):
        yield server


def test_nothing_listening_is_registry_unavailable_naming_the_uri(quick_http: None) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    registry = Registry(uri)
    for call in (lambda: registry.versions("pulsar-x-y"), lambda: registry.get_alias("pulsar-x-y"),
                 lambda: registry.set_alias("pulsar-x-y", "1")):
        with pytest.raises(RegistryUnavailable) as raised:
            call()
        assert raised.value.uri == uri and str(raised.value).startswith(f"MLflow at {uri}")
        assert is_unavailable(raised.value.__cause__)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_after_retries_are_registry_unavailable(quick_http: None,
                                                              status: int) -> None:
    with _http_server(status, b"proxy broke") as server:
        uri = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(RegistryUnavailable) as raised:
            Registry(uri).versions("pulsar-x-y")
        assert raised.value.uri == uri
        assert server.seen == 2  # the first answer and one retry


def test_client_errors_are_not_outages(quick_http: None, mlflow_uri: str) -> None:
    body = b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad filter"}'
    with _http_server(400, body) as server, pytest.raises(MlflowException) as raised:
        Registry(f"http://127.0.0.1:{server.server_port}").versions("pulsar-x-y")
    assert not isinstance(raised.value, RegistryUnavailable) and server.seen == 1
    with pytest.raises(MlflowException) as missing:
        Registry(mlflow_uri).get_version("pulsar-missing", "1")
    assert not is_unavailable(missing.value)
