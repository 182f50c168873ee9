"""Request and response bodies of the /v1 API (these models are the OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pulsar_core.contract import DEFAULT_CITY_ID, MAX_ID, VALUE_RANGE, Col

HexagonRef = str | int
# A city or service type id: an int32, as the CRD and the data contract bound it.
Id = Annotated[int, Field(ge=0, le=MAX_ID)]


def _ranged(column: str) -> Any:
    """A value field showing the column contract's range in the schema. The row validation
    enforces it, so an out-of-range value rejects its row by name (out_of_range:<column>)."""
    low, high = VALUE_RANGE[column]
    return Field(json_schema_extra={"minimum": low, "maximum": high})


class HistoryRow(BaseModel):
    """One observed 7.5-minute snapshot of a hexagon x service type (the column contract)."""

    model_config = ConfigDict(extra="forbid")

    hexagon: HexagonRef = Field(description="H3 cell, as a string ('882c...fff') or an int.")
    service_type: int = Field(ge=0, le=MAX_ID, description="Service type id (1 Eco, 2 Plus, ...).")
    city_id: int = Field(DEFAULT_CITY_ID, ge=0, le=MAX_ID)
    period_start: datetime = Field(description="Start of the 7.5-minute period (UTC).")
    period_end: datetime | None = Field(None, description="Default: period_start + 7.5 min.")
    demand_signal: float = _ranged(Col.DEMAND_SIGNAL)
    supply_signal: float = _ranged(Col.SUPPLY_SIGNAL)
    acceptance_rate: float = _ranged(Col.ACCEPTANCE_RATE)
    price_conversion: float = _ranged(Col.PRICE_CONVERSION)
    rule_sheet_id: int | None = None
    surge_percent: float = _ranged(Col.SURGE_PERCENT)
    surge_absolute: float = _ranged(Col.SURGE_ABSOLUTE)
    cumulative_surge_percent: float = _ranged(Col.CUMULATIVE_SURGE_PERCENT)
    cumulative_surge_absolute: float = _ranged(Col.CUMULATIVE_SURGE_ABSOLUTE)


class HistoryColumns(BaseModel):
    """The rows of `history`, column by column: the compact form for bulk clients.

    Every column has one value per row; value ranges are checked by the same row validation
    as `history` (a bad value rejects its row, named by index).
    """

    model_config = ConfigDict(extra="forbid")

    hexagon: list[HexagonRef]
    service_type: list[Id]
    city_id: list[Id] | None = Field(
        None, description=f"Default: {DEFAULT_CITY_ID} for every row.")
    period_start: list[datetime]
    period_end: list[datetime | None] | None = Field(
        None, description="Default: period_start + 7.5 min.")
    demand_signal: list[float]
    supply_signal: list[float]
    acceptance_rate: list[float]
    price_conversion: list[float]
    rule_sheet_id: list[int | None] | None = None
    surge_percent: list[float]
    surge_absolute: list[float]
    cumulative_surge_percent: list[float]
    cumulative_surge_absolute: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> HistoryColumns:
        rows = len(self.hexagon)
        for name, values in self:
            if values is not None and len(values) != rows:
                raise ValueError(f"history_columns.{name} has {len(values)} values but "
                                 f"hexagon has {rows}: every column needs one value per row")
        return self


class ForecastRequest(BaseModel):
    """Hexagons to forecast; history comes from the live feed unless given explicitly."""

    model_config = ConfigDict(extra="forbid")

    hexagons: list[HexagonRef] = Field(
        min_length=1, description="H3 cells (string or int); more than the server's limit -> 413."
    )
    service_type: int | None = Field(None, ge=0, le=MAX_ID, description="Only this service type.")
    horizons_minutes: list[float] | None = Field(
        None, min_length=1, description="Subset of the model's horizons; default: all of them."
    )
    history: list[HistoryRow] | None = Field(
        None, description="Recent snapshots to forecast from instead of the live buffer."
    )
    history_columns: HistoryColumns | None = Field(
        None, description="The same as `history`, column by column (faster for many rows).")

    @model_validator(mode="after")
    def _one_history(self) -> ForecastRequest:
        if self.history is not None and self.history_columns is not None:
            raise ValueError("send either history or history_columns, not both")
        return self


class ModelRef(BaseModel):
    name: str
    version: str
    run_id: str | None = None


class Forecast(BaseModel):
    """One hexagon x service type x horizon."""

    hexagon: str = Field(description="H3 cell as a string.")
    hexagon_id: int = Field(description="The same H3 cell as an int.")
    service_type: int
    horizon_minutes: float
    issued_for: datetime = Field(description="Start of the last observed period (the anchor).")
    target_period_start: datetime
    current: float | None = Field(description="Demand in the anchor period.")
    value: float | None = Field(description="Forecast demand_signal.")
    change_pct: float | None = Field(description="Forecast vs current, in percent.")
    direction: Literal["up", "down", "flat"]
    confidence: float | None = Field(description="0..1; below the threshold -> low_confidence.")
    low_confidence: bool
    model: str = Field(
        description="Which model answered: cnn | blend | elasticnet | baseline:<name>.")
    explanation: str


class Missing(BaseModel):
    hexagon: str
    reason: str


class ForecastResponse(BaseModel):
    model: ModelRef
    source: Literal["history", "live"]
    cnn_error: str | None = Field(None, description="Why the CNN did not answer, if it did not.")
    forecasts: list[Forecast]
    missing: list[Missing] = Field(description="Requested hexagons without a forecast, and why.")


class TopResponse(BaseModel):
    model: ModelRef
    horizon_minutes: float
    forecasts: list[Forecast] = Field(description="Largest expected rise first.")


class ModelInfo(BaseModel):
    model: ModelRef
    alias: str | None
    loaded_at: datetime
    feature_spec: dict[str, Any]
    training_window: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(
        description="Why not ready; while ready, why the version the registry names is not the "
        "one served (its load failed, or the registry poll did). Empty when all is well.")
    model_version: str | None
    live_series: int
    live_age_seconds: float | None


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    detail: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
