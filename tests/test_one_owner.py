"""Every rule has one owner and every copy agrees with it.

The CRD owns spec defaults and allowed values; `pulsar_core.fallback.Fallback` the fallback
choices. Copies that must exist (pydantic mirrors for typed parsing, the images' env contracts)
are compared here with their owner, so changing one without the other fails a test.
"""

from __future__ import annotations

from typing import Any

from pulsar_core.fallback import Fallback
from pulsar_core.settings import ServeSettings
from tests.operator.crd_schema import spec_schema


def _crd(path: str) -> dict[str, Any]:
    """The schema of a spec field, by dotted camelCase path ("serving.fallback")."""
    schema = spec_schema()
    for part in path.split("."):
        schema = schema["properties"][part]
    return schema


def test_the_fallback_choices_are_the_crds():
    field = _crd("serving.fallback")
    assert field["enum"] == [choice.value for choice in Fallback]
    assert field["default"] == ServeSettings.model_fields["fallback"].default
