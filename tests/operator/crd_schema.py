"""Helpers to validate specs with the CRD's own openAPIV3Schema (defaults applied like the API)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "surgemodels.forecasting.pulsar.dev.yaml"


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def spec_schema() -> dict[str, Any]:
    return load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: absent fields take `default`."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    result = dict(value)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in result and "default" in prop:
            result[name] = copy.deepcopy(prop["default"])
        if name in result:
            result[name] = apply_defaults(prop, result[name])
    return result


def validate_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Return the defaulted spec or raise jsonschema.ValidationError."""
    schema = spec_schema()
    defaulted = apply_defaults(schema, spec)
    jsonschema.Draft4Validator(schema).validate(defaulted)
    return defaulted
