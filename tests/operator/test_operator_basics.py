"""Create -> exactly one Job with the expected spec; reconciles are idempotent; crash safety."""

from __future__ import annotations

from typing import Any

from pulsar_operator.builders import build_training_job
from pulsar_operator.domain import Platform, SurgeModel, Trigger
from pulsar_operator.spec import parse_spec
from pulsar_operator.triggers import training_hash

from tests.operator.conftest import (
    JOBS,
    NS,
    SM,
    condition,
    events_of,
    eventually,
    objects,
    patch_model,
    running_operator,
    status_of,
    surge_model,
)


def _env(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


async def test_create_makes_one_job_with_the_spec_and_reconcile_again_keeps_one(
        k8s: Any, mlflow_uri: str) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco", training={"window": 16})
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        jobs = await eventually(lambda: objects(k8s, JOBS), what="a training Job")
        training = await eventually(lambda: status_of(k8s, "tehran-eco").get("lastTraining"))
        job = jobs[0]
        assert training["job"] == job["metadata"]["name"]
        assert job["metadata"]["name"].startswith("tehran-eco-train-")
        assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-tehran-eco"
        env = _env(job)
        assert env["PULSAR_WINDOW"] == "16" and env["PULSAR_CITY"] == "tehran"
        assert env["PULSAR_MLFLOW_TRACKING_URI"] == mlflow_uri
        assert condition(k8s, "tehran-eco", "Training")["status"] == "True"
        assert status_of(k8s, "tehran-eco")["phase"] == "Training"
        assert status_of(k8s, "tehran-eco")["observedGeneration"] == 1
        # a serving-only edit (new generation) reconciles but does not retrain
        await patch_model(k8s, "tehran-eco", {"metadata": {"generation": 2},
                                              "spec": {"serving": {"replicas": 3}}})
        await eventually(lambda: status_of(k8s, "tehran-eco").get("observedGeneration") == 2)
        assert len(objects(k8s, JOBS)) == 1
    # a second operator life reconciles everything again (resume): still one Job
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri) as memo:
        await eventually(lambda: memo["runtime"].statuses.get((NS, "tehran-eco")))
        assert len(objects(k8s, JOBS)) == 1
        assert any(e["reason"] == "TrainingStarted" for e in events_of(k8s, "tehran-eco"))


async def test_operator_killed_after_job_before_status_makes_no_second_job(
        k8s: Any, mlflow_uri: str) -> None:
    body = surge_model("mashhad-bike", city="mashhad", service="bike")
    k8s.objects[SM, NS, "mashhad-bike"] = body
    # what the operator had created right before it died: the Job, but no status
    spec = parse_spec(body["spec"])
    model = SurgeModel("mashhad-bike", NS, "uid-mashhad-bike", spec, Platform(mlflow_uri))
    orphan = build_training_job(model, Trigger("spec", f"spec-g1-{training_hash(spec)}"))
    k8s.objects[JOBS, NS, orphan["metadata"]["name"]] = orphan
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        training = await eventually(lambda: status_of(k8s, "mashhad-bike").get("lastTraining"))
        assert training["job"] == orphan["metadata"]["name"]
    assert len(objects(k8s, JOBS)) == 1


async def test_paused_model_starts_nothing(k8s: Any, mlflow_uri: str) -> None:
    k8s.objects[SM, NS, "shiraz-all"] = surge_model("shiraz-all", city="shiraz", service="all",
                                                    paused=True)
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: status_of(k8s, "shiraz-all").get("phase") == "Paused")
        await patch_model(k8s, "shiraz-all", {"metadata": {"generation": 2},
                                              "spec": {"paused": False}})
        await eventually(lambda: objects(k8s, JOBS), what="a Job once unpaused")
    assert len(objects(k8s, JOBS)) == 1


async def test_spec_the_schema_missed_is_reported_in_status(k8s: Any, mlflow_uri: str) -> None:
    # KMock does not validate against the CRD, like a cluster with an outdated CRD would not
    k8s.objects[SM, NS, "broken"] = surge_model("broken", training={"window": 1})
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: status_of(k8s, "broken").get("phase") == "Failed")
        ready = condition(k8s, "broken", "Ready")
        assert ready["reason"] == "InvalidSpec" and "spec.training.window" in ready["message"]
        await eventually(lambda: [e for e in events_of(k8s, "broken")
                                  if e["reason"] == "InvalidSpec" and e["type"] == "Warning"])
    assert objects(k8s, JOBS) == []


async def test_a_spec_outside_the_platform_policy_is_invalid_and_starts_nothing(
        k8s: Any, mlflow_uri: str) -> None:
    k8s.objects[SM, NS, "rogue"] = surge_model("rogue", training={
        "image": "attacker/x:1", "schedule": "* * * * *"})
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri,
                                allowed_image_prefixes=["ghcr.io/pulsar-dev/"]):
        await eventually(lambda: status_of(k8s, "rogue").get("phase") == "Failed")
        message = condition(k8s, "rogue", "Ready")["message"]
        assert "spec.training.image: 'attacker/x:1' is outside the platform's image policy" \
            in message and "PULSAR_ALLOWED_IMAGE_PREFIXES" in message
        assert "spec.training.schedule" in message and "PULSAR_MIN_SCHEDULE_MINUTES" in message
        # a model inside the policy trains as before
        jobs = await eventually(lambda: objects(k8s, JOBS),
                                what=f"the compliant model's Job {status_of(k8s, 'tehran-eco')}")
    assert [job["metadata"]["name"].split("-train-")[0] for job in jobs] == ["tehran-eco"]


async def test_a_model_whose_spec_never_parses_owns_no_name(k8s: Any, mlflow_uri: str) -> None:
    """D1: an older model with cron `61 25 * * *` held `pulsar-tehran-eco` and refused the
    good model that shares it; a broken spec now owns nothing and reports only its own error."""
    broken = surge_model("inv06", training={"schedule": "61 25 * * *"})
    broken["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"  # the older one
    k8s.objects[SM, NS, "inv06"] = broken
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: objects(k8s, JOBS),
                         what=f"the good model's Job {status_of(k8s, 'tehran-eco')}")
        await eventually(lambda: status_of(k8s, "inv06").get("phase") == "Failed")
        assert "spec.training.schedule" in condition(k8s, "inv06", "Ready")["message"]
        assert "belongs to" not in str(status_of(k8s, "tehran-eco"))
