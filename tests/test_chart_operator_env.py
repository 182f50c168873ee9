"""The operator Deployment sets exactly the PULSAR_* variables OperatorSettings reads."""

from __future__ import annotations

import re
from pathlib import Path

from pulsar_operator.config import OperatorSettings

from pulsar_core.nats_auth import ENV_PREFIX, NatsAuth

DEPLOYMENT = Path(__file__).resolve().parents[1] / "charts/pulsar/templates/deployment.yaml"


def chart_variables() -> set[str]:
    return set(re.findall(r"- name: (PULSAR_[A-Z0-9_]+)", DEPLOYMENT.read_text()))


def test_every_chart_variable_is_an_operator_setting() -> None:
    fields = {f"PULSAR_{name.upper()}" for name in OperatorSettings.model_fields}
    fields |= {f"{ENV_PREFIX}{name.upper()}" for name in NatsAuth.model_fields}
    variables = chart_variables()
    assert variables, "the Deployment sets no PULSAR_* variable"
    # OperatorSettings ignores unknown variables, so a misspelt one would be dropped silently.
    assert variables - fields == set()


def test_required_settings_are_always_set() -> None:
    required = {f"PULSAR_{name.upper()}" for name, field in OperatorSettings.model_fields.items()
                if field.is_required()}
    assert required, "OperatorSettings has no required field: this test checks nothing"
    assert required <= chart_variables()


def test_probes_hit_the_liveness_port_kopf_serves() -> None:
    text = DEPLOYMENT.read_text()
    assert "containerPort: {{ .Values.operator.livenessPort }}" in text
    assert "value: {{ .Values.operator.livenessPort | quote }}" in text
    assert text.count("path: /healthz") == 2
