"""Chart files that are not templates: they parse, describe the chart, and the CRDs are valid."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "pulsar"
K8S_VERSION = "1.30"


def test_every_static_yaml_parses() -> None:
    files = [CHART / "Chart.yaml", CHART / "values.yaml",
             *sorted((CHART / "crds").glob("*.yaml")), *sorted((CHART / "files").glob("*.yaml"))]
    for path in files:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert documents, f"{path} is empty"


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"]


def test_chart_crds_are_valid_kubernetes_objects() -> None:
    kinds = set()
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)
            kinds.add(document["spec"]["names"]["kind"])
    assert kinds == {"SurgeModel"}  # HA needs no extra CRD: replicas elect a leader on a Lease


def test_templates_have_no_tabs_and_balanced_actions() -> None:
    for template in sorted((CHART / "templates").iterdir()):
        text = template.read_text()
        assert "\t" not in text, f"{template.name}: tabs break YAML indentation"
        assert text.count("{{") == text.count("}}"), f"{template.name}: unbalanced {{ }}"
        opened = len(re.findall(r"{{-?\s*(?:if|range|with|define)\b", text))
        closed = len(re.findall(r"{{-?\s*end\b", text))
        assert opened == closed, f"{template.name}: {opened} blocks opened, {closed} ended"
