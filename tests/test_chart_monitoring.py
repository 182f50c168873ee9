"""The chart's Grafana dashboard and Prometheus alerts: valid PromQL (checked by Prometheus's own
`promtool`), every alert unit-tested, every series one Pulsar's own services export (no
kube-state-metrics), and rendered by Helm only when asked for."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.stack import CHART, render_chart

MONITORING = CHART / "files" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULES_TEST = Path(__file__).parent / "monitoring" / "rules-test.yaml"
# What Grafana substitutes before it sends a query.
GRAFANA_VARIABLES = {"$namespace": ".*", "$__rate_interval": "5m", "$__range": "1h"}
SERIES = re.compile(r"\b((?:pulsar|kube)_[a-z0-9_]+)\b")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: install Debian's `prometheus` package "
                    "(apt-get install prometheus) to check the PromQL")
    return path


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def _rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _exported_series() -> set[str]:
    """Sample names the operator, predictor and bridge registries can produce."""
    from prometheus_client import CollectorRegistry
    from pulsar_bridge.metrics import BridgeMetrics
    from pulsar_operator import metrics as operator_metrics
    from pulsar_predictor.metrics import Metrics

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                "gauge": [""]}
    names: set[str] = set()
    registry: CollectorRegistry
    for registry in (operator_metrics.REGISTRY, Metrics().registry, BridgeMetrics().registry):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return names


def test_rule_file_passes_promtool_check() -> None:
    assert "SUCCESS: 9 rules found" in _run(_promtool(), "check", "rules", str(RULES))


def test_every_alert_fires_when_it_should_and_only_then() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"]
              for rule in group["rules"]}
    tested = {case["alertname"] for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for case in test["alert_rule_test"]}
    assert tested == alerts == {"PulsarModelDegraded", "PulsarTrainingFailed",
                                "PulsarOperatorNatsDown", "PulsarBreakerOpen",
                                "PulsarLiveDrift", "PulsarLiveDataStale",
                                "PulsarSignalBridgeStalled", "PulsarSignalBridgeRejecting",
                                "PulsarDeadLettersLost"}
    _run(_promtool(), "test", "rules", str(RULES_TEST))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables substituted, as a recording rule for promtool."""
    promtool = _promtool()
    rules = []
    for index, query in enumerate(_dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"unsubstituted Grafana variable in {query}"
        rules.append({"record": f"pulsar:dashboard_query_{index}", "expr": query})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in _run(promtool, "check", "rules", str(path))


def test_every_series_queried_is_exported() -> None:
    used = {name for expr in _dashboard_queries() + _rule_exprs()
            for name in SERIES.findall(expr)}
    missing = used - _exported_series()
    assert used and missing == set(), f"queried but exported by nothing: {sorted(missing)}"


def test_dashboard_covers_what_ops_ask_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("phase", "training duration", "failures", "promotions and rollbacks",
                  "forecast latency", "fallbacks", "breaker", "live mae vs evaluation mae",
                  "signal bridge lag", "rows read", "periods published",
                  "rejected rows by reason", "signal bridge errors", "dead letters"):
        assert topic in titles, topic
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "pulsar-overview"


def _kinds(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents if doc["kind"] in {"ConfigMap", "PrometheusRule"}}


def test_chart_renders_neither_by_default() -> None:
    pytest.importorskip("helm_python", reason="pip install helm-python-sdk (the dev extra)")
    assert _kinds(render_chart({})) == {}


def test_chart_renders_dashboard_and_rules_when_enabled() -> None:
    pytest.importorskip("helm_python", reason="pip install helm-python-sdk (the dev extra)")
    rendered = _kinds(render_chart({"monitoring": {
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Pulsar"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}}))
    config_map, rule = rendered["ConfigMap"], rendered["PrometheusRule"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Pulsar"}
    assert json.loads(config_map["data"]["pulsar.json"]) == json.loads(DASHBOARD.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == {"groups": yaml.safe_load(RULES.read_text())["groups"]}
