"""H3 cell parsing and neighbourhoods (cached: the same cells are asked for again and again)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import h3
import h3.api.basic_int as h3int

from pulsar_predictor.errors import InvalidInput


@lru_cache(maxsize=65536)
def to_str(cell: int) -> str:
    return str(h3.int_to_str(cell))


def parse_one(ref: str | int, field: str) -> int:
    """An H3 cell given as a string or an int -> its int form; InvalidInput naming `field`."""
    try:
        cell = h3.str_to_int(ref.strip().lower()) if isinstance(ref, str) else int(ref)
        valid = 0 <= cell < 2**64 and h3int.is_valid_cell(cell)
    except (ValueError, TypeError, OverflowError):
        valid = False
    if not valid:
        text = repr(ref)  # shortened: an error never echoes a huge input back
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text):,} characters)"
        raise InvalidInput(
            f"{field}: {shown} is not a valid H3 cell; send the cell as a string like "
            "'882c2e6a8dfffff' or as its 64-bit int form",
            field=field,
        )
    return cell


def parse_many(refs: Sequence[str | int], field: str = "hexagons") -> list[int]:
    """Parse and de-duplicate, keeping the request's order."""
    cells = {parse_one(ref, f"{field}[{index}]"): None for index, ref in enumerate(refs)}
    return list(cells)


@lru_cache(maxsize=65536)
def _disk(cell: int, ring: int) -> tuple[int, ...]:
    return tuple(h3int.grid_disk(cell, ring))


def with_neighbours(cells: Iterable[int], ring: int) -> set[int]:
    """The cells plus every cell within `ring` steps (what neighbour features read)."""
    out: set[int] = set()
    for cell in cells:
        out.update(_disk(cell, ring) if ring > 0 else (cell,))
    return out


def require_resolutions(cells: Iterable[int], allowed: Iterable[int] | None,
                        field: str = "hexagons") -> None:
    """InvalidInput for the first cell whose H3 resolution the model was not trained on
    (None: the bundle does not say, so nothing is checked)."""
    if not allowed:
        return
    known = set(allowed)
    for cell in cells:
        resolution = h3int.get_resolution(cell)
        if resolution not in known:
            raise InvalidInput(
                f"{field}: {to_str(cell)} is a resolution-{resolution} cell; this model was "
                f"trained on resolution {sorted(known)} cells (h3.cell_to_parent / "
                "cell_to_children convert)", field=field, resolutions=sorted(known))
