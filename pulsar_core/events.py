"""NATS subjects and payloads: the one definition every publisher and consumer uses."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

MODEL_REGISTERED = "pulsar.events.model.registered"
MODEL_PROMOTED = "pulsar.events.model.promoted"
RETRAIN_STREAM = "PULSAR_RETRAIN"
RETRAIN_SUBJECTS = "pulsar.retrain.>"
SIGNALS_STREAM = "PULSAR_SIGNALS"  # keeps the live signals for a predictor's warm start
SIGNALS_SUBJECTS = "pulsar.signals.>"
DEAD_LETTER_STREAM = "PULSAR_DEAD_LETTERS"  # bounded: what a Pulsar component set aside as invalid
DEAD_LETTER_SUBJECTS = "pulsar.deadletter.>"


def retrain_subject(city: str, service: str) -> str:
    return f"pulsar.retrain.{city}.{service}"


def model_retrain_subject(registered_model: str, city: str, service: str) -> str:
    """A SurgeModel's own retrain subject, unique as its MLflow model name is: the scope's
    `pulsar.retrain.<city>.<service>` for the model that keeps the scope's default name, else
    `pulsar.retrain.model.<registered model>` (dots, which NATS reads as separators, become _)."""
    from pulsar_core.settings import registered_model_name

    if registered_model == registered_model_name(city, service):
        return retrain_subject(city, service)
    return f"pulsar.retrain.model.{registered_model.replace('.', '_')}"


def signals_subject(city: str, service: str) -> str:
    return f"pulsar.signals.{city}.{service}"


def dead_letter_subject(source: str) -> str:
    """Where `source` (a component: `operator`, `bridge`, ...) sets aside what it rejects."""
    return f"pulsar.deadletter.{source}"


def _now() -> datetime:
    return datetime.now(UTC)


class SurgeModelRef(BaseModel):
    namespace: str
    name: str


class ModelRegistered(BaseModel):
    """Published by the trainer after a version is registered."""

    model_config = ConfigDict(extra="ignore")

    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float] = Field(default_factory=dict)
    surge_model: SurgeModelRef | None = None
    registered_at: datetime = Field(default_factory=_now)


class ModelPromoted(BaseModel):
    """Published by the operator when the champion alias moves."""

    model_config = ConfigDict(extra="ignore")

    model_name: str
    version: str
    previous_version: str | None = None
    surge_model: SurgeModelRef | None = None
    promoted_at: datetime = Field(default_factory=_now)


class RetrainRequest(BaseModel):
    """Body of a message on pulsar.retrain.<city>.<service>; all fields optional."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field("requested", max_length=200)
    requested_by: str | None = Field(None, max_length=200)
