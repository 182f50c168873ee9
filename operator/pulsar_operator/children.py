"""Level-triggered children: does what exists still hold what the operator wants?

The operator owns the fields it sets, nothing else: server defaults, fields other controllers
add (a revision annotation, a clusterIP) and labels added by hand are left alone.
"""

from __future__ import annotations

from typing import Any

from pulsar_operator.spec_rules import quantity


def drift(live: Any, wanted: Any, path: str = "") -> list[str]:
    """The fields of `wanted` that `live` does not hold with the same value (dotted paths,
    list items by index); [] when it holds them all."""
    if isinstance(wanted, dict):
        if not isinstance(live, dict):
            return [path or "."]
        return [field for key, value in wanted.items()
                for field in drift(live.get(key), value, f"{path}.{key}" if path else key)]
    if isinstance(wanted, list):
        if not isinstance(live, list) or len(live) != len(wanted):
            return [path or "."]
        return [field for index, (item, want) in enumerate(zip(live, wanted, strict=True))
                for field in drift(item, want, f"{path}[{index}]")]
    if live == wanted:
        return []
    number = quantity(wanted)
    return [] if number is not None and number == quantity(live) else [path or "."]


def holds(live: Any, wanted: Any) -> bool:
    """Every field of `wanted` is in `live` with the same value (lists item by item)."""
    return not drift(live, wanted)
