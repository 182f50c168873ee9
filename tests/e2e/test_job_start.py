"""A training Job whose pods cannot run says why, on a real control plane.

Refused: the ResourceQuota admission plugin refuses the pods, the real Job controller records
FailedCreate Events (and nothing in the Job's status), the operator reads them and fails fast.
Unschedulable: the real scheduler finds no node with room and says so on the pod; the training
keeps waiting (an autoscaler may add a node) and status shows the scheduler's words."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import restricted_namespace
from tests.e2e.stack import Installed, wait_for

NS, NAME = "pulsar-quota", "quota-full"


def test_a_job_whose_pods_are_refused_fails_fast_with_the_reason(installed: Installed) -> None:
    api = installed.api
    restricted_namespace(api, NS)
    api.apply({"apiVersion": "v1", "kind": "ResourceQuota",
               "metadata": {"name": "no-pods", "namespace": NS}, "spec": {"hard": {"pods": "0"}}})
    api.apply({"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
               "metadata": {"name": NAME, "namespace": NS},
               "spec": {"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/x/"]},
                        "registeredModel": "pulsar-quota-tehran-eco"}})
    job = wait_for(lambda: api.list("Job", NS), 30, "the training Job", installed.diagnose)[0]

    def failed() -> dict[str, Any] | None:
        status = (api.get("SurgeModel", NAME, NS) or {}).get("status") or {}
        training = status.get("lastTraining") or {}
        return training if training.get("outcome") == "Failed" else None

    # the Job's own activeDeadlineSeconds is an hour: only the fast path ends it this soon
    training = wait_for(failed, 60, "lastTraining Failed", installed.diagnose)
    assert training["job"] == job["metadata"]["name"]
    assert "pods cannot be created" in training["message"]
    assert "exceeded quota: no-pods" in training["message"], training["message"]
    wait_for(lambda: not api.list("Job", NS) or None, 30, "the stuck Job deleted",
             installed.diagnose)
    events = [e for e in api.list("Event", NS, fieldSelector=f"involvedObject.name={NAME}")
              if e["reason"] == "TrainingFailed"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert "exceeded quota" in events[0]["message"]
    conditions = {c["type"]: c for c in api.get("SurgeModel", NAME, NS)["status"]["conditions"]}
    assert conditions["Training"]["status"] == "False"
    assert conditions["Training"]["reason"] == "Failed"
    installed.assert_no_traceback()


def test_a_job_no_node_can_run_waits_and_says_why(installed: Installed) -> None:
    api, ns, name = installed.api, "pulsar-big", "too-big"
    restricted_namespace(api, ns)
    api.apply({"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/x/"]},
                        "registeredModel": "pulsar-big-tehran-eco",
                        "training": {"resources": {"requests": {"cpu": "1000"}}}}})

    def waiting() -> dict[str, Any] | None:
        status = (api.get("SurgeModel", name, ns) or {}).get("status") or {}
        training = status.get("lastTraining") or {}
        return training if "waits for a node" in (training.get("message") or "") else None

    training = wait_for(waiting, 60, "lastTraining saying it waits", installed.diagnose)
    assert training["outcome"] == "Running"
    assert "Insufficient cpu" in training["message"], training["message"]
    assert api.list("Job", ns), "a Job that may yet run is kept"
    conditions = {c["type"]: c for c in api.get("SurgeModel", name, ns)["status"]["conditions"]}
    assert conditions["Training"]["status"] == "True"
    assert "Insufficient cpu" in conditions["Training"]["message"]
    events = wait_for(lambda: [e for e in api.list("Event", ns,
                                                   fieldSelector=f"involvedObject.name={name}")
                               if e["reason"] == "TrainingPending"] or None, 30,
                      "the TrainingPending Event", installed.diagnose)
    assert len(events) == 1 and events[0]["type"] == "Warning"
    api.delete("SurgeModel", name, ns)
    installed.assert_no_traceback()


def test_a_trainer_that_cannot_find_its_data_fails_once_and_says_why(
        installed: Installed) -> None:
    """Exit 2 (bad data URI) fails the Job at once (podFailurePolicy: one pod, no retries); the
    trainer's termination message reaches status, the Training condition and the Event."""
    api, ns, name = installed.api, "pulsar-nodata", "no-data"
    restricted_namespace(api, ns)
    api.apply({"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"city": "tehran", "serviceType": "eco",
                        "data": {"uris": ["/nonexistent/pulsar/city.parquet"],
                                 "format": "snapshot-parquet"},
                        "registeredModel": "pulsar-nodata-tehran-eco",
                        "training": {"backoffLimit": 3}}})

    def failed() -> dict[str, Any] | None:
        status = (api.get("SurgeModel", name, ns) or {}).get("status") or {}
        training = status.get("lastTraining") or {}
        return training if training.get("outcome") == "Failed" else None

    training = wait_for(failed, 120, "lastTraining Failed", installed.diagnose)
    assert "trainer exited 2: " in training["message"], training["message"]
    assert "no such file or directory" in training["message"]
    job = api.get("Job", training["job"], ns)
    reasons = {c["type"]: c.get("reason") for c in job["status"]["conditions"]}
    assert reasons.get("Failed") == "PodFailurePolicy", job["status"]
    pods = api.list("Pod", ns, labelSelector=f"batch.kubernetes.io/job-name={training['job']}")
    assert len(pods) == 1 and job["status"].get("failed") == 1  # no retry of a bad URI
    events = [e for e in api.list("Event", ns, fieldSelector=f"involvedObject.name={name}")
              if e["reason"] == "TrainingFailed"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert "no such file or directory" in events[0]["message"]
    conditions = {c["type"]: c for c in api.get("SurgeModel", name, ns)["status"]["conditions"]}
    assert "no such file or directory" in conditions["Training"]["message"]
    installed.assert_no_traceback()
