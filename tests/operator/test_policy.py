"""The platform's policy and the fixed rules: images, data URIs, quantities and schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pulsar_operator.config import OperatorSettings
from pulsar_operator.policy import Policy, shortest_gap_minutes
from pulsar_operator.spec import InvalidSpec, parse_spec
from pulsar_operator.spec_rules import IMAGE_REF, data_uri_problem, quantity

CRD = Path(__file__).resolve().parents[2] / "crds/surgemodels.forecasting.pulsar.dev.yaml"


def _spec(**overrides: Any) -> Any:
    raw: dict[str, Any] = {"city": "tehran", "serviceType": "eco",
                           "data": {"uris": ["s3://pulsar-data/tehran/"]}}
    for key, value in overrides.items():
        raw[key] = value
    return parse_spec(raw)


@pytest.mark.parametrize(("uri", "problem"), [
    ("file:///etc/passwd", "system folders"), ("/proc/self/environ", "system folders"),
    ("/var/run/secrets/kubernetes.io/serviceaccount/token", "system folders"),
    ("../../etc/passwd", "'..' segment"), ("/data/../etc/shadow", "'..' segment"),
    ("s3://x?endpoint_override=http://169.254.169.254", "query string"),
    ("s3://x/y#frag", "query string"), ("http://attacker/x.csv", "scheme 'http'"),
    ("ftp://x/y", "scheme 'ftp'"),
])
def test_unsafe_data_uris_are_refused_naming_the_field(uri: str, problem: str) -> None:
    assert problem in (data_uri_problem(uri) or "")
    with pytest.raises(InvalidSpec, match=r"spec\.data\.uris: uris\[0\]"):
        _spec(data={"uris": [uri]})


@pytest.mark.parametrize("uri", ["s3://b/t/", "gs://b/x/*.parquet", "/data/a*.csv",
                                 "file:///data/x..y/z.csv", "exports/2025.csv"])
def test_ordinary_data_uris_pass_the_fixed_rules(uri: str) -> None:
    assert data_uri_problem(uri) is None


@pytest.mark.parametrize(("text", "value"), [
    ("250m", "0.25"), ("1.5Gi", str(1.5 * 2**30)), ("2e3", "2000"), ("1E", str(10**18)),
    ("+4", "4"), ("1Pi", str(2**50)), ("10e999", "1e1000")])
def test_quantities_read_as_kubernetes_reads_them(text: str, value: str) -> None:
    from decimal import Decimal

    assert quantity(text) == Decimal(value)


def test_quantities_above_1pi_are_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.training\.resources\.limits\.memory.*1Pi"):
        _spec(training={"resources": {"limits": {"memory": "10e999"}}})
    assert _spec(training={"resources": {"limits": {"memory": "1Pi"}}})


@pytest.mark.parametrize("image", ["Attacker/X", "x;rm -rf /", "a b", "ghcr.io/x:", "x@sha1:ab"])
def test_malformed_images_are_refused_with_an_example(image: str) -> None:
    with pytest.raises(InvalidSpec, match=r"not an image reference.*ghcr\.io"):
        _spec(training={"image": image})


def test_the_platform_policy_names_the_field_the_policy_and_the_variable() -> None:
    policy = Policy(image_prefixes=("ghcr.io/pulsar-dev/",), data_prefixes=("s3://pulsar-data/",),
                    min_schedule_minutes=60)
    assert policy.problems(_spec()) == []
    spec = _spec(training={"image": "attacker/x:1", "schedule": "* * * * *"},
                 data={"uris": ["s3://pulsar-data/ok/", "s3://elsewhere/x/"]},
                 serving={"image": "ghcr.io/pulsar-dev/pulsar-predictor:2"})
    problems = policy.problems(spec)
    assert [p.split(":")[0] for p in problems] == [
        "spec.training.image", "spec.data.uris[1]", "spec.training.schedule"]
    assert "PULSAR_ALLOWED_IMAGE_PREFIXES" in problems[0] and "ghcr.io/pulsar-dev/" in problems[0]
    assert "every 1 min" in problems[2] and "minimum is 60" in problems[2]


@pytest.mark.parametrize(("schedule", "gap"), [
    ("* * * * *", 1), ("*/5 * * * *", 5), ("0,1 * * * *", 1), ("0 */6 * * *", 360),
    ("30 2 * * *", 1440)])
def test_the_shortest_gap_of_a_schedule(schedule: str, gap: float) -> None:
    assert shortest_gap_minutes(schedule) == gap


def test_the_policy_comes_from_settings() -> None:
    settings = OperatorSettings(mlflow_tracking_uri="http://m", allowed_image_prefixes=["a/"],
                                allowed_data_prefixes=["s3://b/"], min_schedule_minutes=5)
    assert Policy.of(settings) == Policy(("a/",), ("s3://b/",), 5)
    assert Policy.of(OperatorSettings(mlflow_tracking_uri="http://m")) == Policy()


def test_the_crd_says_what_the_model_checks() -> None:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    images = [spec["properties"]["training"]["properties"]["image"],
              spec["properties"]["serving"]["properties"]["image"],
              spec["properties"]["signals"]["properties"]["bridge"]["properties"]["image"]]
    assert all(image["pattern"] == IMAGE_REF for image in images)
    rules = spec["properties"]["data"]["properties"]["uris"]["items"]["x-kubernetes-validations"]
    assert len(rules) == 4  # '..', query/fragment, scheme, system folders: data_uri_problem's
