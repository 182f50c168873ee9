"""The chart's RBAC is generated from the operator's one source (pulsar_operator.rbac.RULES)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pulsar_operator.rbac import RULES

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "pulsar"


def sync_script() -> ModuleType:
    """scripts/ is not a package: load the generator from its path."""
    path = ROOT / "scripts" / "sync_chart_crd.py"
    spec = importlib.util.spec_from_file_location("sync_chart_crd", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples: rule shapes differ, permissions must not."""
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def chart_sections() -> dict[str, list[dict[str, Any]]]:
    return yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())


def test_chart_rules_grant_exactly_the_operator_rules() -> None:
    sections = chart_sections()
    granted = set().union(*(grants(rules) for rules in sections.values()))
    assert granted == grants(RULES)


def test_chart_rules_file_is_the_generated_one() -> None:
    assert chart_sections() == sync_script().split_rules(RULES)


def test_namespaced_roles_hold_no_cluster_scoped_resource() -> None:
    sections = chart_sections()
    cluster_scoped = {"customresourcedefinitions", "namespaces"}
    for section in ("namespaced", "leaderElection"):
        assert {r for _, r, _ in grants(sections[section])} & cluster_scoped == set()
    assert {r for _, r, _ in grants(sections["cluster"])} <= cluster_scoped


def test_leases_are_granted_in_the_release_namespace_only() -> None:
    """Leader election needs leases in the operator's own namespace, nowhere else."""
    sections = chart_sections()
    assert grants(sections["leaderElection"]) == {
        ("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update")}
    from tests.e2e.stack import render_chart

    for values in ({}, {"operator": {"watchNamespaces": ["a"]}}):
        holders = [(d["kind"], d["metadata"].get("namespace")) for d in render_chart(values)
                   if d["kind"] in ("Role", "ClusterRole") and "leases" in str(d["rules"])]
        assert holders == [("Role", "pulsar-system")], holders


def test_template_uses_every_section() -> None:
    template = (CHART / "templates" / "rbac.yaml").read_text()
    used = set(re.findall(r"\$rules\.([A-Za-z]+)", template))
    assert used == set(chart_sections())


def test_every_rule_is_a_valid_policy_rule() -> None:
    for rules in chart_sections().values():
        for rule in rules:
            assert set(rule) == {"apiGroups", "resources", "verbs"}
            assert rule["verbs"] and "*" not in rule["verbs"]
            assert "*" not in rule["resources"]


def test_the_operator_reads_no_secret_even_when_it_mounts_some() -> None:
    """Secrets reach pods by reference (secretKeyRef, Secret volumes): the kubelet reads them,
    so naming one (the operator's own NATS key, the workloads') widens no Role."""
    from tests.e2e.stack import render_chart

    assert {resource for _, resource, _ in grants(RULES)} & {"secrets"} == set()
    keys = {"credentials": {"operator": {"natsCredsSecret": "nats-creds"},
                            "workloads": {"natsNkeySecret": "nats-nk", "natsSecret": "nats"}}}
    for values in ({}, keys, {**keys, "operator": {"watchNamespaces": ["a"]}}):
        roles = [d for d in render_chart(values) if d["kind"] in ("Role", "ClusterRole")]
        assert roles
        assert {r for role in roles for r in grants(role["rules"])} == grants(RULES)
