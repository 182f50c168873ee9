"""The typed status of a SurgeModel: what the operator writes under `.status`.

Parsed once at the start of a reconcile and dumped when written, so the JSON is exactly what
each step set: fields never set stay absent (`exclude_unset`), a field set to None is written
as null (a merge patch removes it), and keys this model does not know are kept (extra="allow"),
so a newer operator's fields survive an older one. The CRD's status schema names the same
top-level fields (tests/operator/test_status.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from pulsar_operator.recorder import Decision

T = TypeVar("T")
log = logging.getLogger(__name__)


class Part(BaseModel):
    """A camelCase object of the status that keeps keys it does not know."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    def dump(self) -> dict[str, Any]:
        """The JSON object as the API holds it: only the fields that were set."""
        return self.model_dump(by_alias=True, exclude_unset=True)

    def updated(self, **values: Any) -> Self:
        """A copy with these fields set (None included: written as null, i.e. removed)."""
        return self.model_validate({**self.dump(), **{self._alias(name): _raw(value)
                                                      for name, value in values.items()}})

    def merged(self, part: Self) -> Self:
        """A copy with every top-level field that `part` set (a step's part of the status)."""
        return self.model_validate({**self.dump(), **part.dump()})

    def without(self, name: str) -> Self:
        """A copy with the field `name` absent (not null), as `dict.pop` would leave it."""
        raw = self.dump()
        raw.pop(self._alias(name), None)
        return self.model_validate(raw)

    @classmethod
    def _alias(cls, name: str) -> str:
        return cls.model_fields[name].alias or name


class Condition(Part):
    """A Kubernetes-convention condition (see conditions.set_condition)."""

    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    last_transition_time: str | None = None


class Training(Part):
    """status.lastTraining: the last training Job and how it ended."""

    job: str | None = None
    trigger_id: str | None = None
    trigger_kind: str | None = None
    spec_hash: str | None = None
    started_at: str | None = None
    outcome: str | None = None
    message: str | None = None
    completed_at: str | None = None
    deferred: str | None = None  # a spec change's trigger that waits for this Job to end


class LastTrigger(Part):
    """status.lastTrigger: what started the last Job."""

    kind: str | None = None
    id: str | None = None
    reason: str | None = None
    at: str | None = None


class Registry(Part):
    """status.registry: when MLflow was read, or why not and when to try again."""

    checked_at: str | None = None
    error: str | None = None
    failures: int | None = None
    retry_at: str | None = None


class VersionSummary(Part):
    """A registered version as status shows it: number, run, per-horizon test MAE."""

    version: str | None = None
    run_id: str | None = None
    metrics: dict[str, float] | None = None
    mae30m: float | None = Field(None, alias="mae30m")  # to_camel would say mae30M


class Champion(VersionSummary):
    """status.champion: the version that holds the alias."""

    promoted_at: str | None = None


class Challenger(VersionSummary):
    """status.challenger: the newest version judged and its verdict."""

    passed: bool | None = None
    reason: str | None = None
    awaiting_approval: bool | None = None
    judged_at: str | None = None


class Promotion(Part):
    """status.promotion: the plan's last word (Promoted condition's message and reason)."""

    reason: str | None = None
    event_reason: str | None = None
    checked_at: str | None = None


class Predictor(Part):
    """status.predictor: the predictor Deployment applied, its rollout and readiness."""

    deployment: str | None = None
    version: str | None = None
    applied_hash: str | None = None
    endpoint: str | None = None
    rollout_started_at: str | None = None
    rolled_out_at: str | None = None
    ready_replicas: int | None = None
    replicas: int | None = None
    available: bool | None = None
    rollout_failed: str | None = None


class ShadowHorizon(Part):
    """One horizon of a shadow's paired evidence (status.rollout.horizons)."""

    horizon_minutes: float
    scored: int | None = None
    periods: int | None = None
    champion_live_mae: float | None = None
    challenger_live_mae: float | None = None
    periods_won: int | None = None
    p_value: float | None = None


class WatchHorizon(Part):
    """One horizon of a new champion's watch (status.rollout.watchHorizons)."""

    horizon_minutes: float
    scored: int | None = None
    champion_live_mae: float | None = None
    previous_scored: int | None = None
    previous_live_mae: float | None = None
    regression_pct: float | None = None


class Rollout(Part):
    """status.rollout: the live rollout, Shadowing -> Watching (promoted) | Retired;
    Watching -> Promoted (kept) | RolledBack."""

    phase: str | None = None
    challenger: str | None = None
    champion: str | None = None
    started_at: str | None = None
    verdict: str | None = None
    reason: str | None = None
    test: str | None = None
    horizons: list[ShadowHorizon] | None = None
    champion_live_mae30m: float | None = Field(None, alias="championLiveMae30m")
    challenger_live_mae30m: float | None = Field(None, alias="challengerLiveMae30m")
    decided_at: str | None = None
    promoted_at: str | None = None
    previous: str | None = None
    evidence_until: str | None = None
    watch: str | None = None
    watch_verdict: str | None = None
    watch_reason: str | None = None
    watch_horizons: list[WatchHorizon] | None = None
    watched_until: str | None = None
    rolled_back_at: str | None = None
    challenger_removed: bool | None = None


class Signals(Part):
    """status.signals: where the live signals come from; the bridge this model runs
    (deployment, ready) or the SurgeModel whose bridge feeds its subject (fedBy)."""

    source: str | None = None
    subject: str | None = None
    deployment: str | None = None
    applied_hash: str | None = None
    ready: bool | None = None
    fed_by: str | None = None
    message: str | None = None


class RejectedChild(Part):
    """status.rejectedChild: a child the API refused (4xx) and how often in a row."""

    message: str
    failures: int
    at: str


class Status(Part):
    """The whole of .status (the kopf bookkeeping key is not ours and never parsed)."""

    phase: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] | None = None
    retrain_subject: str | None = None
    last_training: Training | None = None
    last_trigger: LastTrigger | None = None
    last_retrain_request: str | None = None
    last_scheduled_at: str | None = None
    registry: Registry | None = None
    champion: Champion | None = None
    challenger: Challenger | None = None
    promotion: Promotion | None = None
    last_good_version: str | None = None
    rollout: Rollout | None = None
    predictor: Predictor | None = None
    signals: Signals | None = None
    rejected_child: RejectedChild | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Status:
        """The status as typed; a top-level field of the wrong shape (a hand edit through the
        status subresource) is dropped and logged, and this reconcile writes it anew."""
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            bad = {str(issue["loc"][0]) for issue in error.errors() if issue["loc"]}
            log.warning("status fields %s are not what the operator writes; rebuilding them",
                        ", ".join(sorted(bad)))
            return cls.model_validate({key: value for key, value in raw.items()
                                       if key not in bad})


def _raw(value: Any) -> Any:
    if isinstance(value, Part):
        return value.dump()
    if isinstance(value, list):
        return [_raw(item) for item in value]
    return value


@dataclass(frozen=True)
class Step(Generic[T]):
    """What one step of a reconcile decided: its part of the status and its Events."""

    part: T
    decisions: tuple[Decision, ...] = field(default=())
