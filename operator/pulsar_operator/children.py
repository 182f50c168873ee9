"""Level-triggered children: does what exists still hold what the operator wants?

The operator owns the fields it sets, nothing else: server defaults, fields other controllers
add (a revision annotation, a clusterIP) and labels added by hand are left alone.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")
_SUFFIX: dict[str, Decimal | int] = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity's value ("500m" == "0.5", "1Gi" == "1024Mi"), None if not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
        return Decimal(number) * Decimal(_SUFFIX[suffix]) if suffix in _SUFFIX else None
    except (InvalidOperation, ValueError):
        return None


def holds(live: Any, wanted: Any) -> bool:
    """Every field of `wanted` is in `live` with the same value (lists item by item)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(holds(live.get(key), value)
                                              for key, value in wanted.items())
    if isinstance(wanted, list):
        return isinstance(live, list) and len(live) == len(wanted) and all(
            holds(item, want) for item, want in zip(live, wanted, strict=True))
    if live == wanted:
        return True
    number = quantity(wanted)
    return number is not None and number == quantity(live)
