"""Checks on the scope of loaded data: one model is trained for one city."""

from __future__ import annotations

import pandas as pd

from pulsar_core.contract import Col
from pulsar_core.data.errors import DataContractError


def require_one_city(snapshots: pd.DataFrame, city_id: int | None) -> None:
    """Rows of several cities trained as one would mix unrelated demand: name them and the fix."""
    cities = sorted(int(c) for c in snapshots[Col.CITY_ID].unique())
    if city_id is None and len(cities) > 1:
        counts = snapshots[Col.CITY_ID].value_counts()
        shown = ", ".join(f"{c} ({int(counts[c]):,} rows)" for c in cities[:10])
        raise DataContractError(
            f"the data holds {len(cities)} cities: {shown}; pass --city-id (PULSAR_CITY_ID) "
            "to train one of them")
