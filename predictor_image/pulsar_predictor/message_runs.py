"""Consecutive signal messages that can be validated as one frame.

Validating a frame costs about the same for one row as for hundreds, and the bridge publishes
one row per message: a warm start that replays days of a city one message at a time spends
hours in pandas overhead. Messages are grouped into runs that store exactly what one message at
a time would:
- a run holds snapshot rows only: raw kandoo records are merged per period over a window of
  recent periods (raw.py), so each such message stays a run of its own;
- no (hexagon, service type, period) of a message repeats one of an earlier message in its run,
  since a later message replaces that row while one frame's validation rejects the repeat;
- its rows have the same fields, each holding one JSON type (or null) throughout: pandas infers
  a column's dtype from its values and validation reads each dtype its own way (an H3 string
  next to an integer would not be read as one), and an integer beyond float precision next to a
  null would be widened to a float;
- a run holds at most `max_rows` rows, so the frame it builds is bounded.

As a second guard, the feed goes one message at a time wherever a run's validation still
rejects a row as a repeat or for its type (a case these rules did not foresee). It cannot catch
the widened integer (its row fails as an invalid cell, if at all): that rule is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pulsar_core.contract import Col

MAX_RUN_ROWS = 4096
_KEY = (Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START)
_EXACT_FLOAT = 2**53
Kinds = dict[str, str]  # field -> JSON type of its values ("null" while only nulls were seen)


@dataclass(frozen=True)
class Message:
    """One parsed message: its snapshot rows and raw kandoo records."""

    rows: list[dict[str, Any]]
    raw: list[dict[str, Any]]


@dataclass
class Run:
    messages: list[Message] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    keys: set[tuple[str, ...]] = field(default_factory=set)
    kinds: Kinds = field(default_factory=dict)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):  # one float64 column holds both exactly, up to 2**53
        return "wide-int" if isinstance(value, int) and abs(value) >= _EXACT_FLOAT else "number"
    return type(value).__name__


def _merge(kinds: Kinds | None, more: Kinds) -> Kinds | None:
    """`kinds` and `more` as one frame's; None when they cannot share one."""
    if kinds is None or (kinds and kinds.keys() != more.keys()):
        return None
    merged = dict(kinds)
    for name, kind in more.items():
        before = merged.get(name)
        if before is None or before == "null":
            if before == "null" and kind == "wide-int":
                return None
            merged[name] = kind
        elif kind == "null":
            if before == "wide-int":
                return None
        elif kind != before:
            return None
    return merged


def _kinds(rows: list[dict[str, Any]]) -> Kinds | None:
    kinds: Kinds | None = {}
    for row in rows:
        kinds = _merge(kinds, {name: _kind(value) for name, value in row.items()})
    return kinds


def _keys(message: Message) -> set[tuple[str, ...]]:
    # repr: any JSON value is hashable this way, and equal values give equal keys
    return {tuple(repr(row.get(name)) for name in _KEY) for row in message.rows}


def message_runs(messages: Iterable[Message], max_rows: int = MAX_RUN_ROWS) -> Iterator[Run]:
    """The messages in order, cut into runs (see the module docstring)."""
    run = Run()
    for message in messages:
        keys, own = _keys(message), _kinds(message.rows)
        alone = bool(message.raw) or own is None
        joined = None if alone or own is None else _merge(run.kinds, own)
        if run.messages and (joined is None or not keys.isdisjoint(run.keys)
                             or len(run.rows) + len(message.rows) > max_rows):
            yield run
            run = Run()
            joined = own
        run.messages.append(message)
        run.rows.extend(message.rows)
        run.keys |= keys
        run.kinds = joined or {}
        if alone:
            yield run
            run = Run()
    if run.messages:
        yield run
