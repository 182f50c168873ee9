"""Specs the schema cannot refuse are refused at admission by CEL, or reported once in status
and as an Event by the running operator, never as a traceback loop."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import restricted_namespace
from tests.e2e.stack import Installed, wait_for
from tests.support.kubeapi import ApiError

NS = "pulsar-invalid"


def _model(name: str, **training: Any) -> dict[str, Any]:
    return {"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/x/"]},
                     "registeredModel": f"pulsar-invalid-{name.replace('.', '-')}",
                     "training": training}}


def test_a_name_children_cannot_take_is_refused_at_admission(installed: Installed) -> None:
    restricted_namespace(installed.api, NS)
    with pytest.raises(ApiError) as refused:
        installed.api.apply(_model("dot.model"))
    assert refused.value.status == 422 and "metadata.name" in refused.value.message


def test_an_impossible_schedule_is_reported_once(installed: Installed) -> None:
    api = installed.api
    restricted_namespace(api, NS)
    api.apply(_model("bad-cron", schedule="61 25 * * *"))

    def reported() -> dict[str, Any] | None:
        status = (api.get("SurgeModel", "bad-cron", NS) or {}).get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        failed = status.get("phase") == "Failed" and ready.get("reason") == "InvalidSpec"
        return ready if failed else None

    ready = wait_for(reported, 30, "phase Failed / Ready=False InvalidSpec", installed.diagnose)
    assert "spec.training.schedule" in ready["message"] and "61 25" in ready["message"]
    time.sleep(6)  # three resync periods of the installed operator: the report must not repeat
    events = [e for e in api.list("Event", NS, fieldSelector="involvedObject.name=bad-cron")
              if e["reason"] == "InvalidSpec"]
    assert len(events) == 1 and events[0]["type"] == "Warning", events
    assert (events[0].get("count") or 1) == 1
    assert not api.list("Job", NS), "an invalid spec must not start training"
    installed.assert_no_traceback()


def test_a_child_the_api_server_refuses_is_a_condition_and_one_event(
        installed: Installed) -> None:
    """Requests above limits pass the CRD but the Job is invalid: say so, do not go silent."""
    api = installed.api
    restricted_namespace(api, NS)
    api.apply(_model("over-limits", resources={"requests": {"cpu": "4"},
                                               "limits": {"cpu": "2"}}))

    def degraded() -> dict[str, Any] | None:
        status = (api.get("SurgeModel", "over-limits", NS) or {}).get("status") or {}
        found = next((c for c in status.get("conditions") or [] if c["type"] == "Degraded"), {})
        return found if found.get("reason") == "ChildRejected" else None

    found = wait_for(degraded, 30, "Degraded=True ChildRejected", installed.diagnose)
    assert found["status"] == "True" and "trainer Job" in found["message"]
    assert "must be less than or equal to cpu limit" in found["message"]
    status = api.get("SurgeModel", "over-limits", NS)["status"]
    assert status["phase"] == "Degraded"
    time.sleep(6)  # the operator retries with backoff; the Event is not repeated
    events = [e for e in api.list("Event", NS, fieldSelector="involvedObject.name=over-limits")
              if e["reason"] == "ChildRejected"]
    assert len(events) == 1 and events[0]["type"] == "Warning", events
    assert not api.list("Job", NS)


@pytest.mark.parametrize(("patch", "field", "says"), [
    ({"data": {"uris": ["file:///etc/passwd"]}}, "spec.data.uris[0]", "system folders"),
    ({"data": {"uris": ["/var/run/secrets/kubernetes.io/serviceaccount/token"]}},
     "spec.data.uris[0]", "system folders"),
    ({"data": {"uris": ["../../etc/passwd"]}}, "spec.data.uris[0]", "'..' segment"),
    ({"data": {"uris": ["s3://x/y?endpoint_override=http://169.254.169.254"]}},
     "spec.data.uris[0]", "query string"),
    ({"data": {"uris": ["http://attacker.example/x.csv"]}}, "spec.data.uris[0]", "scheme"),
    ({"training": {"image": "attacker/X;rm -rf"}}, "spec.training.image", "should match"),
    ({"training": {"resources": {"limits": {"memory": "10e999"}}}},
     "spec.training.resources.limits[memory]", "at most 1Pi"),
    ({"serving": {"resources": {"requests": {"cpu": "2Ei"}}}},
     "spec.serving.resources.requests[cpu]", "at most 1Pi"),
], ids=["etc-passwd", "sa-token", "parent", "endpoint-override", "http", "image", "memory",
        "cpu"])
def test_unsafe_data_images_and_quantities_are_refused_at_admission(
        installed: Installed, patch: dict[str, Any], field: str, says: str) -> None:
    restricted_namespace(installed.api, NS)
    model = _model("unsafe")
    for key, value in patch.items():
        model["spec"][key] = value
    with pytest.raises(ApiError) as refused:
        installed.api.apply(model)
    assert refused.value.status == 422, refused.value.message
    assert field in refused.value.message and says in refused.value.message, \
        refused.value.message
    assert installed.api.get("SurgeModel", "unsafe", NS) is None


def test_safe_data_images_and_quantities_are_admitted(installed: Installed) -> None:
    api = installed.api
    restricted_namespace(api, NS)
    model = _model("safe", image="registry.example:5000/team/pulsar-trainer:1.2.3",
                   resources={"limits": {"memory": "1Pi", "cpu": 64}}, schedule="0 0 1 1 *")
    model["spec"]["data"]["uris"] = ["s3://bucket/tehran/*.parquet", "/data/exports/a.csv",
                                     "file:///data/b..c/x.csv"]
    api.apply(model)
    assert api.get("SurgeModel", "safe", NS) is not None
    api.delete("SurgeModel", "safe", NS)
