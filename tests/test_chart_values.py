"""The chart's values: documented defaults validate, typos are rejected by name, templates and
values cannot drift apart (no helm binary needed)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "pulsar"
INSTALL_DOC = CHART.parents[1] / "docs" / "install.md"
VALUE_REF = re.compile(r"\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def load_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema_errors(values: dict[str, Any]) -> list[str]:
    """`<json path>: <message>` for every violation, the way `helm install` reports them."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(values)]


def with_value(dotted: str, value: Any) -> dict[str, Any]:
    """The default values with one key (dotted path) set, as `--set dotted=value` would."""
    values = copy.deepcopy(load_values())
    *parents, leaf = dotted.split(".")
    node = values
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return values


def template_references() -> dict[str, set[str]]:
    """Every `.Values.a.b` path used by a template -> the files that use it."""
    found: dict[str, set[str]] = {}
    for template in sorted((CHART / "templates").iterdir()):
        for match in VALUE_REF.finditer(template.read_text()):
            found.setdefault(match.group(1).lstrip("."), set()).add(template.name)
    return found


def value_paths(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf in values.yaml (lists and empty maps are leaves)."""
    if not isinstance(node, dict) or not node:
        return [prefix]
    paths = []
    for key, child in node.items():
        paths += value_paths(child, f"{prefix}.{key}" if prefix else key)
    return paths


def resolves(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def test_schema_is_valid_draft7() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)


def test_default_values_validate() -> None:
    assert schema_errors(load_values()) == []


@pytest.mark.parametrize(
    ("dotted", "value", "named"),
    [
        ("operator.replica", 2, "'replica' was unexpected"),
        ("operator.replicas", "two", "$.operator.replicas"),
        ("operator.replicas", -1, "$.operator.replicas"),
        ("images.operator.pullPolicy", "Sometimes", "$.images.operator.pullPolicy"),
        ("images.operator.digest", "latest", "$.images.operator.digest"),
        ("images.trainer", {}, "'trainer' was unexpected"),
        ("mlflow.trackingUri", "mlflow:5000", "$.mlflow.trackingUri"),
        ("nats.url", "http://nats:4222", "$.nats.url"),
        ("operator.watchNamespaces", ["Team_A"], "$.operator.watchNamespaces[0]"),
        ("operator.logFormat", "text", "$.operator.logFormat"),
        ("operator.securityContext.readOnlyRootFileSystem", True,
         "'readOnlyRootFileSystem' was unexpected"),
        ("metrics.port", 70000, "$.metrics.port"),
        ("metrics.serviceMonitor.interval", "30 seconds", "$.metrics.serviceMonitor.interval"),
        ("operator.resources.requests", {"cpu": "lots"}, "$.operator.resources.requests.cpu"),
        ("operator.resources.limit", {}, "'limit' was unexpected"),
        ("operator.workers", 0, "$.operator.workers"),
        ("networkPolicy.egressPorts", [{"port": 53}], "'protocol' is a required property"),
        ("networkPolicy.enable", True, "'enable' was unexpected"),
        ("serviceAccount.annotations", {"a": 1}, "$.serviceAccount.annotations.a"),
        ("predictor.http.maxHeaders", 9, "$.predictor.http.maxHeaders"),
        ("predictor.http.headerTimeoutSeconds", 0, "$.predictor.http.headerTimeoutSeconds"),
        ("predictor.http.maxConcurrency", "many", "$.predictor.http.maxConcurrency"),
        ("predictor.http.maxHeader", 100, "'maxHeader' was unexpected"),
        ("credentials.operator.natsCredsSecret", "Nats_Creds",
         "$.credentials.operator.natsCredsSecret"),
        ("credentials.workloads.natsNkeySecret", "x" * 254,
         "$.credentials.workloads.natsNkeySecret"),
        ("credentials.workloads.natsNkey", "nats-nk", "'natsNkey' was unexpected"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(dotted: str, value: Any, named: str) -> None:
    errors = schema_errors(with_value(dotted, value))
    assert errors, f"{dotted}={value!r} was accepted"
    assert any(named in error for error in errors), errors


@pytest.mark.parametrize("who", ["operator", "workloads"])
def test_one_nats_key_secret_at_a_time(who: str) -> None:
    """A pod logs in one way: naming a .creds and an nkey Secret both is refused."""
    values = with_value(f"credentials.{who}.natsCredsSecret", "nats-creds")
    assert schema_errors(values) == []
    assert schema_errors(with_value(f"credentials.{who}.natsNkeySecret", "nats-nk")) == []
    values["credentials"][who]["natsNkeySecret"] = "nats-nk"
    assert [e for e in schema_errors(values)
            if e.startswith(f"$.credentials.{who}.natsNkeySecret:")], schema_errors(values)


def test_every_template_reference_exists_in_values() -> None:
    values = load_values()
    references = template_references()
    assert references, "no .Values reference found: the regex or the templates are broken"
    missing = {path: sorted(files) for path, files in references.items()
               if not resolves(values, path)}
    assert missing == {}, f"templates use values that values.yaml does not define: {missing}"


def test_every_value_is_used_by_a_template() -> None:
    references = set(template_references())
    unused = [path for path in value_paths(load_values())
              if not any(path == ref or path.startswith(ref + ".") for ref in references)]
    assert unused == [], f"values.yaml keys no template reads (dead or misspelt): {unused}"


def test_reference_scanner_sees_root_and_nested_forms() -> None:
    text = '{{ .Values.a.b }} {{ $.Values.c }} {{ toYaml .Values.d.e_f | nindent 2 }}'
    assert [m.group(1) for m in VALUE_REF.finditer(text)] == [".a.b", ".c", ".d.e_f"]


def test_install_doc_set_flags_are_valid_values() -> None:
    flags = re.findall(r"--set(?:-string)? ([A-Za-z0-9_.]+)=(\S+)", INSTALL_DOC.read_text())
    assert flags, "docs/install.md shows no --set example"
    for dotted, raw in flags:
        assert resolves(load_values(), dotted), f"install.md sets unknown value {dotted}"
        value = yaml.safe_load(raw.strip("'\""))
        if dotted.endswith(".tag"):
            value = str(value)  # helm --set keeps tags as written; the schema wants a string
        assert schema_errors(with_value(dotted, value)) == [], (dotted, raw)
