"""Job succeeded + version registered -> gate -> champion alias -> predictor serves it."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.operator.conftest import (
    AUTOSCALERS,
    BAD,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    GOOD,
    NS,
    SM,
    api,
    champion_version,
    condition,
    deployment_version,
    events_of,
    eventually,
    finish_job,
    objects,
    patch_model,
    register_version,
    running_operator,
    status_of,
    surge_model,
)

REGISTERED = "pulsar-tehran-eco"


def _reasons(server: Any, name: str) -> set[str]:
    return {e["reason"] for e in events_of(server, name)}


async def _ready(server: Any, name: str) -> None:
    await api(server, "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{name}-predictor/"
              "status", {"status": {"readyReplicas": 2, "updatedReplicas": 2,
                                    "availableReplicas": 2}})


async def test_succeeded_job_and_good_version_become_champion_and_served(
        k8s: Any, mlflow_uri: str) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        training = await eventually(lambda: status_of(k8s, "tehran-eco").get("lastTraining"))
        version = register_version(mlflow_uri, REGISTERED, GOOD)
        await finish_job(k8s, training["job"])
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == version,
                         what="champion alias")
        await eventually(lambda: deployment_version(k8s, "tehran-eco") == version)
        status = await eventually(lambda: status_of(k8s, "tehran-eco").get("champion"))
        assert status["version"] == version and status["mae30m"] == 8.0
        # the registry poll may promote before the Job's completion is seen: both must happen
        await eventually(lambda: status_of(k8s, "tehran-eco")["lastTraining"]["outcome"]
                         == "Succeeded", what="the Job's outcome")
        await _ready(k8s, "tehran-eco")
        await eventually(lambda: condition(k8s, "tehran-eco", "Ready").get("status") == "True")
        assert status_of(k8s, "tehran-eco")["phase"] == "Serving"
        await eventually(lambda: {"TrainingSucceeded", "Promoted",
                                  "PredictorRollout"} <= _reasons(k8s, "tehran-eco"))
        deployments = objects(k8s, DEPLOYMENTS)
        assert deployments[0]["metadata"]["ownerReferences"][0]["kind"] == "SurgeModel"


async def test_failing_gate_keeps_the_champion_and_says_why(k8s: Any, mlflow_uri: str) -> None:
    good = register_version(mlflow_uri, REGISTERED, GOOD)
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == good)
        bad = register_version(mlflow_uri, REGISTERED, BAD)
        challenger = await eventually(
            lambda: (status_of(k8s, "tehran-eco").get("challenger") or {}).get("version") == bad
            and status_of(k8s, "tehran-eco")["challenger"], what="the verdict on the bad one")
        assert challenger["passed"] is False and "persistence" in challenger["reason"]
        await eventually(lambda: "GateFailed" in _reasons(k8s, "tehran-eco"))
        assert champion_version(mlflow_uri, REGISTERED) == good
        assert deployment_version(k8s, "tehran-eco") == good


async def test_pinned_version_wins_over_the_gate(k8s: Any, mlflow_uri: str) -> None:
    first = register_version(mlflow_uri, REGISTERED, BAD)
    register_version(mlflow_uri, REGISTERED, GOOD)
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco",
                                                    serving={"modelVersion": first})
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: deployment_version(k8s, "tehran-eco") == first)
        assert champion_version(mlflow_uri, REGISTERED) == first
        await eventually(lambda: "PinnedVersion" in _reasons(k8s, "tehran-eco"))


async def test_manual_policy_promotes_on_the_approval_annotation(
        k8s: Any, mlflow_uri: str) -> None:
    version = register_version(mlflow_uri, REGISTERED, GOOD)
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco", promotion={"policy": "manual"})
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: (status_of(k8s, "tehran-eco").get("challenger") or {}).get(
            "awaitingApproval"), what="awaiting approval")
        assert champion_version(mlflow_uri, REGISTERED) is None
        assert deployment_version(k8s, "tehran-eco") is None
        await patch_model(k8s, "tehran-eco", {"metadata": {"annotations": {
            "forecasting.pulsar.dev/approve-version": version}}})
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == version)
        await eventually(lambda: deployment_version(k8s, "tehran-eco") == version)


async def test_rollout_that_never_gets_ready_is_reverted(k8s: Any, mlflow_uri: str) -> None:
    first = register_version(mlflow_uri, REGISTERED, GOOD)
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: deployment_version(k8s, "tehran-eco") == first)
        await _ready(k8s, "tehran-eco")
        await eventually(lambda: condition(k8s, "tehran-eco", "Ready").get("status") == "True")
        second = register_version(mlflow_uri, REGISTERED, GOOD)
        await eventually(lambda: deployment_version(k8s, "tehran-eco") == second)
        await eventually(lambda: status_of(k8s, "tehran-eco").get("lastGoodVersion") == first)
        await api(k8s, "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/"
                  "tehran-eco-predictor/status", {"status": {"readyReplicas": 0, "conditions": [
                      {"type": "Progressing", "status": "False",
                       "reason": "ProgressDeadlineExceeded"}]}})
        await eventually(lambda: champion_version(mlflow_uri, REGISTERED) == first,
                         what="alias reverted")
        await eventually(lambda: deployment_version(k8s, "tehran-eco") == first)
        await eventually(lambda: "RolloutReverted" in _reasons(k8s, "tehran-eco"))
        challenger = status_of(k8s, "tehran-eco")["challenger"]
        assert challenger["version"] == second and challenger["passed"] is False


async def test_a_predictor_with_two_replicas_gets_a_disruption_budget_until_scaled_down(
        k8s: Any, mlflow_uri: str) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")  # 2 replicas by default
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        training = await eventually(lambda: status_of(k8s, "tehran-eco").get("lastTraining"))
        register_version(mlflow_uri, REGISTERED, GOOD)
        await finish_job(k8s, training["job"])
        budget = (await eventually(lambda: objects(k8s, DISRUPTION_BUDGETS),
                                   what="the PodDisruptionBudget"))[0]
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["metadata"]["ownerReferences"][0]["kind"] == "SurgeModel"
        deployment = objects(k8s, DEPLOYMENTS)[0]
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
        await patch_model(k8s, "tehran-eco", {"spec": {"serving": {"replicas": 1}}})
        await eventually(lambda: not objects(k8s, DISRUPTION_BUDGETS),
                         what="the budget deleted at 1 replica")


async def test_an_autoscaled_predictor_gets_an_owned_autoscaler_until_autoscaling_is_removed(
        k8s: Any, mlflow_uri: str) -> None:
    scaling = {"minReplicas": 3, "maxReplicas": 8, "targetRequestsPerSecond": 12.5}
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco",
                                                     serving={"autoscaling": scaling})
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        training = await eventually(lambda: status_of(k8s, "tehran-eco").get("lastTraining"))
        register_version(mlflow_uri, REGISTERED, GOOD)
        await finish_job(k8s, training["job"])
        autoscaler = (await eventually(lambda: objects(k8s, AUTOSCALERS),
                                       what="the HorizontalPodAutoscaler"))[0]
        deployment = objects(k8s, DEPLOYMENTS)[0]
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        target = autoscaler["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 8)
        assert [m["type"] for m in autoscaler["spec"]["metrics"]] == ["Resource", "Pods"]
        assert autoscaler["spec"]["metrics"][1]["pods"]["target"]["averageValue"] == "12500m"
        assert autoscaler["metadata"]["ownerReferences"][0]["kind"] == "SurgeModel"
        assert objects(k8s, DISRUPTION_BUDGETS), "a floor of 3 replicas keeps a budget"
        await patch_model(k8s, "tehran-eco", {"spec": {"serving": {"autoscaling": None,
                                                                   "replicas": 1}}})
        await eventually(lambda: not objects(k8s, AUTOSCALERS), what="the autoscaler deleted")
        await eventually(lambda: objects(k8s, DEPLOYMENTS)[0]["spec"].get("replicas") == 1,
                         what="the Deployment back on spec.serving.replicas")
        await eventually(lambda: not objects(k8s, DISRUPTION_BUDGETS),
                         what="the budget deleted at 1 replica")


async def test_a_first_rollout_that_fails_posts_one_rolloutfailed_event(
        k8s: Any, mlflow_uri: str) -> None:
    register_version(mlflow_uri, REGISTERED, GOOD)
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: deployment_version(k8s, "tehran-eco") == "1")
        await api(k8s, "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/"
                  "tehran-eco-predictor/status", {"status": {"readyReplicas": 0, "conditions": [
                      {"type": "Progressing", "status": "False",
                       "reason": "ProgressDeadlineExceeded"}]}})
        await eventually(lambda: condition(k8s, "tehran-eco", "Ready").get("reason")
                         == "RolloutFailed", what="Ready=False RolloutFailed")
        events = await eventually(lambda: [e for e in events_of(k8s, "tehran-eco")
                                           if e["reason"] == "RolloutFailed"],
                                  what="the RolloutFailed Event")
        assert events[0]["type"] == "Warning" and "no earlier version" in events[0]["message"]
        await asyncio.sleep(3)  # more passes: the Event is not repeated
        assert len([e for e in events_of(k8s, "tehran-eco") if e["reason"] == "RolloutFailed"]) \
            == 1


async def test_a_hand_edited_predictor_is_repaired_and_the_event_names_the_field(
        k8s: Any, mlflow_uri: str) -> None:
    register_version(mlflow_uri, REGISTERED, GOOD)
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        await eventually(lambda: deployment_version(k8s, "tehran-eco") == "1")
        await api(k8s, "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/"
                  "tehran-eco-predictor", {"spec": {"replicas": 7}})
        repaired = await eventually(lambda: next(
            (e for e in events_of(k8s, "tehran-eco") if e["reason"] == "PredictorRepaired"),
            None), what="the PredictorRepaired Event")
        assert "spec.replicas" in repaired["message"], repaired["message"]
