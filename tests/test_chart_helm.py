"""The chart through Helm's own engine (helm-python-sdk): lint clean, renders what we expect."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.stack import CHART, render_chart

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk (the dev extra)")


def _operator_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def test_helm_lint_finds_no_error() -> None:
    report = helm.lint(str(CHART), strict=True)
    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert errors == [] and not report.get("errors"), report


@pytest.mark.parametrize("values", [
    {}, {"operator": {"replicas": 2}}, {"operator": {"watchNamespaces": ["a", "b"]}},
    {"networkPolicy": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}}},
], ids=["defaults", "ha", "namespaced", "policies"])
def test_render_is_well_formed_with_unique_env(values: dict[str, Any]) -> None:
    documents = render_chart(values)
    assert all(d.get("apiVersion") and d.get("kind") and d["metadata"].get("name")
               for d in documents)
    names = [item["name"] for item in _operator_container(documents)["env"]]
    assert len(names) == len(set(names)), names


def test_default_operator_image_is_fully_qualified() -> None:
    image = _operator_container(render_chart({}))["image"]
    assert image.startswith("ghcr.io/pulsar-dev/pulsar-operator:"), image


def test_notes_name_files_that_exist() -> None:
    import re

    notes = (CHART / "templates" / "NOTES.txt").read_text()
    for name in re.findall(r"examples/([\w.-]+\.yaml)", notes):
        assert (CHART.parents[1] / "examples" / name).exists(), name
