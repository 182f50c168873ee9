"""Typed view of a SurgeModel spec, mirroring the CRD schema (a test keeps defaults in sync)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from pulsar_core.gate import PromotionPolicy

GROUP = "forecasting.pulsar.dev"
VERSION = "v1alpha1"
PLURAL = "surgemodels"
KIND = "SurgeModel"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class InvalidSpec(ValueError):
    """The spec cannot be used; the message names the field and the fix."""


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              strict=True, frozen=True)


def _resources(requests: dict[str, str], limits: dict[str, str]) -> dict[str, Any]:
    return {"requests": requests, "limits": limits}


class DataSpec(_Camel):
    uris: list[str] = Field(min_length=1, max_length=64)
    format: Literal["kandoo-csv", "snapshot-parquet"] = "kandoo-csv"
    lookback_days: float = Field(28, ge=1, le=365)
    holdout_days: float = Field(1, gt=0, le=30)


class ElasticNetSpec(_Camel):
    alpha: float = Field(0.01, gt=0)
    l1_ratio: float = Field(0.5, ge=0, le=1)


class CnnSpec(_Camel):
    channels: int = Field(32, ge=4, le=512)
    epochs: int = Field(30, ge=1, le=1000)
    learning_rate: float = Field(0.003, gt=0, le=1)
    patience: int = Field(4, ge=1, le=100)


class TrainingSpec(_Camel):
    image: str = Field("ghcr.io/pulsar-dev/pulsar-trainer:0.1.0", min_length=1)
    resources: dict[str, Any] = Field(
        default_factory=lambda: _resources({"cpu": "1", "memory": "2Gi"}, {"memory": "4Gi"}))
    schedule: str = Field("0 */6 * * *", pattern=r"^(\S+\s+){4}\S+$")
    horizons_minutes: list[float] = Field(default_factory=lambda: [30.0, 60.0, 90.0],
                                          min_length=1, max_length=8)
    window: int = Field(12, ge=2, le=96)
    elastic_net: ElasticNetSpec = Field(default_factory=ElasticNetSpec)
    cnn: CnnSpec = Field(default_factory=CnnSpec)
    active_deadline_seconds: int = Field(3600, ge=60, le=86400)
    backoff_limit: int = Field(2, ge=0, le=10)

    @field_validator("horizons_minutes")
    @classmethod
    def _periods(cls, value: list[float]) -> list[float]:
        for horizon in value:
            if not 7.5 <= horizon <= 1440 or horizon / 7.5 != int(horizon / 7.5):
                raise ValueError(f"{horizon:g} is not a multiple of 7.5 minutes in [7.5, 1440]")
        return value


class PromotionSpec(_Camel):
    policy: Literal["auto", "manual"] = "auto"
    min_improvement_over_persistence_pct: float = Field(5, ge=0, le=100)
    max_regression_vs_champion_pct: float = Field(2, ge=0, le=100)

    def to_policy(self) -> PromotionPolicy:
        return PromotionPolicy(self.policy, self.min_improvement_over_persistence_pct,
                               self.max_regression_vs_champion_pct)


class ServingSpec(_Camel):
    image: str = Field("ghcr.io/pulsar-dev/pulsar-predictor:0.1.0", min_length=1)
    replicas: int = Field(2, ge=0, le=50)
    resources: dict[str, Any] = Field(
        default_factory=lambda: _resources({"cpu": "250m", "memory": "512Mi"}, {"memory": "1Gi"}))
    model_version: str | None = Field(None, pattern=r"^[1-9][0-9]*$")
    fallback: Literal["elasticnet", "persistence", "none"] = "elasticnet"
    confidence_threshold: float = Field(0.5, ge=0, le=1)
    rollout_deadline_seconds: int = Field(600, ge=30, le=3600)


class SurgeModelSpec(_Camel):
    """`spec` of a SurgeModel; field names are the CRD's camelCase names."""

    city: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    city_id: int | None = Field(None, ge=0)
    service_type: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    service_type_id: int | None = Field(None, ge=0)
    data: DataSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    paused: bool = False


def parse_spec(raw: dict[str, Any]) -> SurgeModelSpec:
    """Parse a spec dict or raise InvalidSpec naming every bad field (`spec.training.window`)."""
    try:
        return SurgeModelSpec.model_validate(raw)
    except ValidationError as error:
        problems = [
            f"spec.{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            for issue in error.errors()
        ]
        raise InvalidSpec("; ".join(problems)) from error
