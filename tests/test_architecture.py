"""Architecture rules that import-linter cannot express (STYLE.md: one registry seam)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["pulsar_core", "pulsar_cli", "operator", "trainer_image", "predictor_image"]
REGISTRY_CALLS = re.compile(
    r"\b(create_model_version|create_registered_model|get_registered_model|"
    r"set_registered_model_alias|delete_registered_model_alias|get_model_version_by_alias|"
    r"search_model_versions|set_model_version_tag|get_model_version|register_model)"
    r"(\s*\(|[\"'])"  # a direct call, or a method name handed to a dispatcher
)


def _sources() -> list[Path]:
    return [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]


def test_only_the_registry_module_calls_mlflows_registry_api() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(1)}"
        for path in _sources()
        if path != ROOT / "pulsar_core" / "registry.py"
        for match in REGISTRY_CALLS.finditer(path.read_text())
    ]
    assert offenders == []


def test_the_rule_sees_the_registry_module_itself() -> None:
    assert REGISTRY_CALLS.search((ROOT / "pulsar_core" / "registry.py").read_text())
