"""The operator's domain types: one SurgeModel as the builders and steps see it, the platform
wiring every model shares, and why a training starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pulsar_core.events import model_retrain_subject
from pulsar_core.settings import registered_model_name
from pulsar_operator.credentials import ChildCredentials, without_credentials
from pulsar_operator.spec import SurgeModelSpec

TriggerKind = Literal["spec", "schedule", "retrain", "manual"]


@dataclass(frozen=True)
class Platform:
    """Cluster wiring shared by all models (from OperatorSettings)."""

    mlflow_tracking_uri: str
    nats_url: str | None = None
    service_account: str | None = None
    credentials: ChildCredentials = field(default_factory=ChildCredentials)
    # ServeSettings field -> value for every predictor (the chart's predictor.http); a field
    # left out keeps ServeSettings' default
    predictor_http: Mapping[str, float] = field(default_factory=dict)

    @property
    def child_mlflow_uri(self) -> str:
        """The tracking URI children get: never with credentials (those come by reference)."""
        return without_credentials(self.mlflow_tracking_uri) or ""

    @property
    def child_nats_url(self) -> str | None:
        return without_credentials(self.nats_url)


@dataclass(frozen=True)
class SurgeModel:
    """One SurgeModel as the builders see it: identity, parsed spec and platform wiring."""

    name: str
    namespace: str
    uid: str
    spec: SurgeModelSpec
    platform: Platform
    generation: int = 1

    @property
    def registered_model(self) -> str:
        return self.spec.registered_model or registered_model_name(self.spec.city,
                                                                   self.spec.service_type)

    @property
    def retrain_subject(self) -> str:
        return self.spec.retrain_subject or model_retrain_subject(
            self.registered_model, self.spec.city, self.spec.service_type)


@dataclass(frozen=True)
class Trigger:
    """Why a training run starts; `id` makes the Job name deterministic."""

    kind: TriggerKind
    id: str
    reason: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
