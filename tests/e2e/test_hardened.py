"""The hardened settings the lifecycle runs under are really in force, and Pulsar passes them.

- OwnerReferencesPermissionEnforcement (OpenShift's default): setting `blockOwnerDeletion` on a
  child of a SurgeModel needs `update` on `surgemodels/finalizers`;
- Pod Security `restricted`: Pulsar's trainer and predictor pods are admitted, a plain pod is not.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pulsar_operator.builders import build_predictor_deployment, build_training_job
from pulsar_operator.domain import Platform, SurgeModel, Trigger
from pulsar_operator.rbac import RULES
from pulsar_operator.spec import parse_spec

from tests.e2e.conftest import restricted_namespace
from tests.support.envtest import ControlPlane
from tests.support.kubeapi import Api, ApiError, install_crds

NS = "hardened"


@pytest.fixture(scope="module")
def model(admin: Api) -> SurgeModel:
    install_crds(admin)
    restricted_namespace(admin, NS)
    admin.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "trainer", "namespace": NS}})
    body = admin.apply({"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
                        "metadata": {"name": "owner", "namespace": NS},
                        "spec": {"city": "tehran", "serviceType": "eco", "paused": True,
                                 "data": {"uris": ["s3://bucket/x/"]}}})
    return SurgeModel("owner", NS, body["metadata"]["uid"], parse_spec(body["spec"]),
                      Platform("http://mlflow:5000", service_account="trainer"))


def _client_as(control_plane: ControlPlane, admin: Api, account: str,
               rules: list[dict[str, Any]]) -> Api:
    """An API client authenticated as a ServiceAccount bound to exactly `rules`."""
    meta = {"name": account, "namespace": NS}
    admin.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
    admin.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": meta, "rules": rules})
    admin.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": meta,
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": account},
                 "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}]})
    return Api(control_plane.client(token=admin.token_for(account, NS)))


def _dry_run(api: Api, body: dict[str, Any]) -> None:
    kind, plural = body["kind"], {"Job": "jobs", "Pod": "pods"}[body["kind"]]
    base = "/apis/batch/v1" if kind == "Job" else "/api/v1"
    deadline = time.monotonic() + 15
    while True:
        try:
            api._call("POST", f"{base}/namespaces/{NS}/{plural}", json=body,
                      params={"dryRun": "All"})
            return
        except ApiError as error:
            # a Role bound a moment ago: the authorizer's cache may not have it yet
            if "cannot create resource" not in error.message or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_blocking_owner_references_need_the_finalizers_grant(
        control_plane: ControlPlane, admin: Api, model: SurgeModel) -> None:
    job = build_training_job(model, Trigger("spec", "hardened-1"))
    namespaced = [rule for rule in RULES if "customresourcedefinitions" not in rule["resources"]
                  and "namespaces" not in rule["resources"]]
    without = [rule for rule in namespaced if not any(r.endswith("/finalizers")
                                                      for r in rule["resources"])]
    with pytest.raises(ApiError) as refused:
        _dry_run(_client_as(control_plane, admin, "no-finalizers", without), job)
    assert "blockOwnerDeletion" in refused.value.message
    _dry_run(_client_as(control_plane, admin, "operator-rules", namespaced), job)


def _pod_from(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, **template["metadata"]},
            "spec": template["spec"]}


def test_restricted_pod_security_admits_pulsar_pods_only(admin: Api, model: SurgeModel) -> None:
    job = build_training_job(model, Trigger("spec", "hardened-2"))
    deployment = build_predictor_deployment(model, "1")
    _dry_run(admin, _pod_from(job["spec"]["template"], "trainer"))
    _dry_run(admin, _pod_from(deployment["spec"]["template"], "predictor"))
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": NS},
             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    with pytest.raises(ApiError) as refused:
        _dry_run(admin, plain)
    assert refused.value.status == 403 and "PodSecurity" in refused.value.message
