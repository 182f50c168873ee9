"""The column contract: names, dtypes and the cadence every part of Pulsar agrees on."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    PERIOD: pd.Timedelta

PERIOD_MINUTES = 7.5


def __getattr__(name: str) -> object:
    """`PERIOD` (a pandas Timedelta) is made on first use: the names and ids here are also read
    by processes that never touch a frame (the operator), and pandas with pyarrow is about
    60 MB of their memory."""
    if name == "PERIOD":
        import pandas as pd

        period = pd.Timedelta(minutes=PERIOD_MINUTES)
        globals()["PERIOD"] = period
        return period
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Col(StrEnum):
    """Columns of a snapshot frame: one row = one hexagon x service type x 7.5-minute period."""

    HEXAGON = "hexagon"
    SERVICE_TYPE = "service_type"
    CITY_ID = "city_id"
    PERIOD_START = "period_start"
    PERIOD_END = "period_end"
    ACCEPTANCE_RATE = "acceptance_rate"
    PRICE_CONVERSION = "price_conversion"
    DEMAND_SIGNAL = "demand_signal"
    SUPPLY_SIGNAL = "supply_signal"
    RULE_SHEET_ID = "rule_sheet_id"
    SURGE_PERCENT = "surge_percent"
    SURGE_ABSOLUTE = "surge_absolute"
    CUMULATIVE_SURGE_PERCENT = "cumulative_surge_percent"
    CUMULATIVE_SURGE_ABSOLUTE = "cumulative_surge_absolute"


SNAPSHOT_DTYPES: dict[str, str] = {
    Col.HEXAGON: "int64",
    Col.SERVICE_TYPE: "int64",
    Col.CITY_ID: "int64",
    Col.PERIOD_START: "datetime64[ns, UTC]",
    Col.PERIOD_END: "datetime64[ns, UTC]",
    Col.ACCEPTANCE_RATE: "float64",
    Col.PRICE_CONVERSION: "float64",
    Col.DEMAND_SIGNAL: "float64",
    Col.SUPPLY_SIGNAL: "float64",
    Col.RULE_SHEET_ID: "Int64",
    Col.SURGE_PERCENT: "float64",
    Col.SURGE_ABSOLUTE: "float64",
    Col.CUMULATIVE_SURGE_PERCENT: "float64",
    Col.CUMULATIVE_SURGE_ABSOLUTE: "float64",
}

# A snapshot without a city (a live message, an API row, a pyfunc frame) belongs to city 1.
DEFAULT_CITY_ID = 1
# Largest city / service type id (int32, as the CRD, ClickHouse and the bridge bound them).
MAX_ID = 2**31 - 1

# Plausible values (inclusive): generous multiples of what real exports show (demand <= ~1,100,
# surge -28..30 %, cumulative clipped at -50/200 %), tight enough to catch unit mistakes. Row
# validation rejects a row outside them; the API schema and the docs show the same numbers.
VALUE_RANGE: dict[str, tuple[float, float]] = {
    Col.DEMAND_SIGNAL: (0.0, 100_000.0),
    Col.SUPPLY_SIGNAL: (0.0, 100_000.0),
    Col.ACCEPTANCE_RATE: (0.0, 1.0),
    Col.PRICE_CONVERSION: (0.0, 1.0),
    Col.SURGE_PERCENT: (-100.0, 1_000.0),
    Col.CUMULATIVE_SURGE_PERCENT: (-100.0, 1_000.0),
    Col.SURGE_ABSOLUTE: (-1e8, 1e8),
    Col.CUMULATIVE_SURGE_ABSOLUTE: (-1e8, 1e8),
}

SERIES_KEY: tuple[str, str] = (Col.HEXAGON, Col.SERVICE_TYPE)
TARGET = Col.DEMAND_SIGNAL

# Same-period values of these are deterministic functions of demand_signal in the real data:
# only their lags may ever be features (see ../shared/data/README.md, "Leak").
LEAKY_SAME_PERIOD: frozenset[str] = frozenset(
    {Col.PRICE_CONVERSION, Col.ACCEPTANCE_RATE, Col.SUPPLY_SIGNAL}
)


class RawCol(StrEnum):
    """Columns of the ClickHouse `snapp_raw_log.kandoo_parameter_nats` CSV export."""

    FROM = "from"
    TO = "to"
    SERVICE_TYPE = "service_type"
    CITY_ID = "city_id"
    HEX_ID = "hex_id"
    RULE_SHEET_ID = "rule_sheet_id"
    SURGE_PERCENT = "surge_percent"
    CUMULATIVE_SURGE_PERCENT = "cumulative_surge_percent"
    SURGE_ABSOLUTE = "surge_absolute"
    CUMULATIVE_SURGE_ABSOLUTE = "cumulative_surge_absolute"
    RULE_ID = "rule_id"
    INCREASE_FACTOR = "increase_factor"
    DECREASE_FACTOR = "decrease_factor"
    RESOLUTION = "resolution"
    REASON = "reason"
    ABSOLUTE_REASON = "absolute_reason"
    ACCEPT_RATE = "accept_rate"
    PRICE_CNVR = "price_cnvr"
    LOGSTASH_TIME = "logstash_time"
    CREATED_DATE = "created_date"
    CLICKHOUSE_TIME = "clickhouse_time"


SERVICE_TYPE_NAMES: dict[int, str] = {1: "eco", 2: "plus", 3: "rose", 5: "delivery", 7: "bike"}


class ForecastCol(StrEnum):
    """Columns of a forecast frame, as returned by a bundle's predict()."""

    HEXAGON = "hexagon"
    SERVICE_TYPE = "service_type"
    ISSUED_FOR = "issued_for"  # period_start of the last observed period (the anchor)
    HORIZON_MINUTES = "horizon_minutes"
    TARGET_PERIOD_START = "target_period_start"
    CURRENT = "current"
    VALUE = "value"
    CHANGE_PCT = "change_pct"
    DIRECTION = "direction"  # "up" | "down" | "flat"
    CONFIDENCE = "confidence"  # 0..1
    MODEL = "model"  # "cnn" | "elasticnet" | "baseline:<name>"
    EXPLANATION = "explanation"
