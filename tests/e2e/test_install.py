"""Installing Pulsar on a real API server: the CRD, every example, the invalid-spec table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import restricted_namespace
from tests.operator.test_crd import INVALID, _with
from tests.support.kubeapi import Api, ApiError, install_crds, load_documents, path_of

ROOT = Path(__file__).resolve().parents[2]
NS = "pulsar"  # the examples' namespace


@pytest.fixture(scope="module")
def installed(admin: Api) -> Api:
    install_crds(admin)  # kubectl apply --server-side -f crds/
    restricted_namespace(admin, NS)
    return admin


def test_crd_is_accepted_and_defaults_horizons(installed: Api) -> None:
    minimal = {"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
               "metadata": {"name": "defaults", "namespace": NS},
               "spec": {"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/x"]}}}
    stored = installed.apply(minimal)
    assert stored["spec"]["training"]["horizonsMinutes"] == [30, 60, 90]
    assert stored["spec"]["training"]["schedule"] == "0 */6 * * *"
    installed.delete("SurgeModel", "defaults", NS)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("surgemodel-*.yaml")),
                         ids=lambda p: Path(p).name)
def test_every_example_applies_server_side(installed: Api, path: Path) -> None:
    for document in load_documents([path]):
        stored = installed.apply(document)
        assert stored["metadata"]["uid"]
        assert stored["spec"]["city"] == document["spec"]["city"]


def _dry_run_create(api: Api, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
            "metadata": {"name": "invalid", "namespace": NS}, "spec": spec}
    api._call("POST", path_of("SurgeModel", NS), json=body,
              params={"dryRun": "All", "fieldValidation": "Strict"})


@pytest.mark.parametrize(("case", "change"), INVALID, ids=[c for c, _ in INVALID])
def test_invalid_spec_rejected_by_the_api_server(installed: Api, case: str,
                                                 change: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as rejected:
        _dry_run_create(installed, _with(change))
    assert rejected.value.status in (400, 422)
    first_key = next(iter(change)).split(".")
    assert f"spec.{first_key[0]}" in rejected.value.message, rejected.value.message


def test_fractional_horizons_that_are_periods_are_accepted(installed: Api) -> None:
    _dry_run_create(installed, _with({"training.horizonsMinutes": [7.5, 22.5, 90]}))


def test_autoscaling_on_defaults_or_on_requests_alone_is_accepted(installed: Api) -> None:
    _dry_run_create(installed, _with({"serving.autoscaling": {"maxReplicas": 5}}))
    _dry_run_create(installed, _with({"serving.resources": {}, "serving.autoscaling": {
        "maxReplicas": 5, "targetCPUUtilizationPercent": 0, "targetRequestsPerSecond": 20}}))


def test_printer_columns_are_served(installed: Api) -> None:
    response = installed.http.get(
        path_of("SurgeModel", NS),
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert response.status_code == 200, response.text
    names = [column["name"] for column in response.json()["columnDefinitions"]]
    assert names[:1] == ["Name"] and {"Phase", "Champion", "MAE@30m", "Ready"} <= set(names)
