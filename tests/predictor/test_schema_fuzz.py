"""Property test of the OpenAPI schema: whatever schemathesis sends, no 5xx comes back."""

import pytest
import schemathesis

# schemathesis loads its OpenAPI support on first use, and pytest rewrites those modules (it is a
# pytest plugin): parsing them mid-session, with other tests' threads alive, once raised
# CPython 3.11.7's "AST constructor recursion depth mismatch" (python/cpython#106905, fixed in
# 3.11.8). Loading it here, at collection, keeps that parse out of the run.
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, given, settings
from pulsar_predictor import create_app

from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL, register


@pytest.fixture(scope="module")
def api_schema(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow's default artifact root lands here
        Registry(uri).set_alias(MODEL, register(uri, tiny_bundle))
    app = create_app(ServeSettings(mlflow_tracking_uri=uri, registered_model=MODEL,
                                   max_hexagons=50, alias_poll_seconds=3600))
    assert app.state.runtime.slot.load_now() is not None  # no lifespan here: load directly
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _check(case) -> None:
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: " \
                                       f"{response.text[:500]}"
    if response.status_code >= 400:
        assert "Traceback" not in response.text and "error" in response.json()


def test_no_input_makes_the_api_fail(api_schema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/forecast", "/v1/forecast/top", "/v1/model"}
    for operation in operations:
        run = settings(max_examples=15, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck))(
            given(case=operation.as_strategy())(_check))
        run()
