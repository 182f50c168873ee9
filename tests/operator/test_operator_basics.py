"""Create -> exactly one Job with the expected spec; reconciles are idempotent."""

from __future__ import annotations

from typing import Any

from tests.operator.conftest import JOBS, NS, SM, eventually, objects, running_operator, surge_model


async def test_create_makes_one_job_and_status(k8s: Any, mlflow_uri: str) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco", training={"window": 16})
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        jobs = await eventually(lambda: objects(k8s, JOBS), what="a training Job")
        status = await eventually(lambda: k8s.objects[SM, NS, "tehran-eco"].raw.get("status",
                                  {}).get("lastTraining"), what="status.lastTraining")
        assert status["job"] == jobs[0]["metadata"]["name"]
    assert len(objects(k8s, JOBS)) == 1
