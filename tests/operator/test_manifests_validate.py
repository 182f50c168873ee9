"""Every object the operator sends as a whole validates against Kubernetes' own OpenAPI schemas.

kubernetes-validate's strict schemas reject unknown fields, so a typo in a builder (or a
`resources` block from a spec that is not a ResourceRequirements) fails here with its path.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kopf
import kubernetes_validate
import pytest
import yaml
from pulsar_operator.builders import (
    build_bridge_deployment,
    build_predictor_autoscaler,
    build_predictor_deployment,
    build_predictor_service,
    build_training_job,
)
from pulsar_operator.domain import Platform, SurgeModel, Trigger
from pulsar_operator.kube import Kube
from pulsar_operator.recorder import Decision, post_event
from pulsar_operator.spec import parse_spec

from tests.operator.conftest import EVENTS, NS

K8S_VERSION = "1.33"  # the oldest release the chart supports; strict = unknown fields fail
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("surgemodel-*.yaml"))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Services and Jobs (their pods carry the name as a label) need a 63-char DNS label.
LABEL_NAMED = {"Service", "Job"}
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PLATFORM = Platform("http://mlflow.pulsar:5000", "nats://nats.pulsar:4222", "pulsar-trainer")
BARE = Platform("http://mlflow.pulsar:5000")
MINIMAL = {"city": "tehran", "serviceType": "eco", "data": {"uris": ["s3://b/t/"]}}
GPU = {"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
       "limits": {"memory": "24Gi", "nvidia.com/gpu": 1}}


def assert_valid(manifest: dict[str, Any]) -> None:
    """Fail naming the object and the JSON path of the first bad field."""
    where = f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{where}: {error.json_path}: {error.message}", pytrace=False)
    # Not expressible in the JSON schemas, but the API server rejects them.
    meta = manifest["metadata"]
    limit, pattern = (63, DNS_LABEL) if manifest["kind"] in LABEL_NAMED else (253, DNS_SUBDOMAIN)
    assert len(meta["name"]) <= limit and pattern.match(meta["name"]), f"{where}: metadata.name"
    for key, value in (meta.get("labels") or {}).items():
        assert len(value) <= 63 and LABEL_VALUE.match(value), f"{where}: metadata.labels.{key}"


def _example(path: Path) -> tuple[str, dict[str, Any]]:
    document = yaml.safe_load(path.read_text())
    return document["metadata"]["name"], document["spec"]


def _variants() -> list[tuple[str, str, dict[str, Any], Platform]]:
    """(id, model name, raw spec, platform): the examples plus edge shapes of the spec."""
    found = [(path.stem, *_example(path), PLATFORM) for path in EXAMPLES]
    return [
        *found,
        ("minimal-no-nats-no-sa", "tehran-eco", MINIMAL, BARE),
        ("gpu-trainer-and-predictor", "tehran-gpu",
         {**MINIMAL, "training": {"resources": GPU}, "serving": {"resources": GPU}}, PLATFORM),
        ("no-resources", "tehran-nores",
         {**MINIMAL, "training": {"resources": {}}, "serving": {"resources": {}}}, PLATFORM),
        ("pinned-zero-replicas", "tehran-pinned",
         {**MINIMAL, "serving": {"modelVersion": "12", "replicas": 0, "fallback": "none"}}, BARE),
        ("long-model-name", "t" * 200, MINIMAL, PLATFORM),
        ("autoscaled-on-cpu-and-requests", "tehran-hpa",
         {**MINIMAL, "serving": {"autoscaling": {"maxReplicas": 10,
                                                 "targetRequestsPerSecond": 7.5}}}, PLATFORM),
        ("clickhouse-bridge-long-name", "b" * 200,
         {**MINIMAL, "cityId": 1, "signals": {"source": "bridge"}, "data": {"clickhouse": {
             "url": "https://ch:8443", "credentialsSecret": {"name": "ch.reader"}}}}, PLATFORM),
        ("nats-relay-no-platform-nats", "tehran-relay",
         {**MINIMAL, "cityId": 1, "signals": {"source": "nats", "natsSubject": "kandoo.raw"}},
         BARE),
        ("autoscaled-on-requests-only", "tehran-rps",
         {**MINIMAL, "serving": {"resources": {}, "autoscaling": {
             "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercent": 0,
             "targetRequestsPerSecond": 40}}}, BARE),
    ]


VARIANTS = _variants()


def _model(name: str, raw: dict[str, Any], platform: Platform) -> SurgeModel:
    return SurgeModel(name=name, namespace=NS, uid="0b7c4f1e-uid", spec=parse_spec(raw),
                      platform=platform, generation=3)


@pytest.mark.parametrize(("name", "raw", "platform"), [v[1:] for v in VARIANTS],
                         ids=[v[0] for v in VARIANTS])
def test_training_jobs_validate_for_every_trigger_kind(name: str, raw: dict[str, Any],
                                                       platform: Platform) -> None:
    model = _model(name, raw, platform)
    for kind in ("spec", "schedule", "retrain", "manual"):
        assert_valid(build_training_job(model, Trigger(kind, f"{kind}-g3-abc", "why")))


@pytest.mark.parametrize(("name", "raw", "platform"), [v[1:] for v in VARIANTS],
                         ids=[v[0] for v in VARIANTS])
def test_predictor_deployment_and_service_validate(name: str, raw: dict[str, Any],
                                                   platform: Platform) -> None:
    model = _model(name, raw, platform)
    assert_valid(build_predictor_deployment(model, model.spec.serving.model_version or "3"))
    assert_valid(build_predictor_service(model))
    if model.spec.serving.autoscaling is not None:
        assert_valid(build_predictor_autoscaler(model))


@pytest.mark.parametrize(("name", "raw", "platform"), [v[1:] for v in VARIANTS
                                                      if v[2].get("signals")],
                         ids=[v[0] for v in VARIANTS if v[2].get("signals")])
def test_bridge_deployments_validate(name: str, raw: dict[str, Any], platform: Platform) -> None:
    assert_valid(build_bridge_deployment(_model(name, raw, platform)))


@pytest.mark.parametrize("builder", ["job", "deployment", "bridge"])
def test_pods_mount_a_writable_tmp_for_a_read_only_root(builder: str) -> None:
    """The images point HOME/TMPDIR at /tmp: the pod must provide it as an emptyDir."""
    model = _model("tehran-eco", MINIMAL, PLATFORM)
    manifest = (build_training_job(model, Trigger("spec", "s")) if builder == "job"
                else build_bridge_deployment(model) if builder == "bridge"
                else build_predictor_deployment(model, "1"))
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume and not mount.get("readOnly")


@pytest.mark.parametrize(("where", "change", "path"), [
    ("typo in a container field", lambda m: m["spec"]["template"]["spec"]["containers"][0]
     .update(imagePullPolice="Always"), r"\$\.spec\.template\.spec\.containers\[0\]"),
    ("resources that are not a ResourceRequirements", lambda m: m["spec"]["template"]["spec"]
     ["containers"][0].update(resources={"limits": {"cpu": ["2"]}}),
     r"\$\.spec\.template\.spec\.containers\[0\]\.resources\.limits\.cpu"),
    ("a podFailurePolicy rule the API does not know", lambda m: m["spec"]["podFailurePolicy"]
     ["rules"][0]["onExitCodes"].update(operator="Equals", value=2),
     r"\$\.spec\.podFailurePolicy\.rules\[0\]\.onExitCodes"),
    ("a label too long for the API", lambda m: m["metadata"]["labels"].update(x="y" * 64),
     r"metadata\.labels\.x"),
])
def test_a_bad_manifest_fails_naming_the_field(where: str, change: Any, path: str) -> None:
    job = copy.deepcopy(build_training_job(_model("tehran-eco", MINIMAL, PLATFORM),
                                           Trigger("spec", "s")))
    change(job)
    with pytest.raises((pytest.fail.Exception, AssertionError), match=path):
        assert_valid(job)


async def test_events_posted_by_the_recorder_validate(k8s: Any) -> None:
    """The real recorder posts through the real client; KMock keeps the exact request bodies."""
    kube = Kube(kopf.ConnectionInfo(server=str(k8s.url).rstrip("/"), insecure=True))
    decisions = [Decision("TrainingStarted", "Job tehran-eco-train-1 started: spec changed"),
                 Decision("GateFailed", "worse than persistence " * 100, warning=True)]
    try:
        for decision in decisions:
            await post_event(kube, NS, "tehran-eco", "0b7c4f1e-uid", decision)
    finally:
        await kube.close()
    posted = [request.data for request in k8s if request.method == "POST"]
    assert [body["reason"] for body in posted] == ["TrainingStarted", "GateFailed"]
    assert len({body["metadata"]["name"] for body in posted}) == 2
    for body in posted:
        assert_valid(body)
    assert len([1 for (resource, _, _), _ in k8s.objects.items() if resource == EVENTS]) == 2
