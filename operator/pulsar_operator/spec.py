"""Typed view of a SurgeModel spec, mirroring the CRD schema (a test keeps defaults in sync)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from pulsar_core.events import signals_subject
from pulsar_core.fallback import Fallback
from pulsar_core.gate import PromotionPolicy
from pulsar_core.live_evidence import RolloutPolicy
from pulsar_core.settings import horizon_problem
from pulsar_operator.spec_rules import IMAGE_REF, MAX_QUANTITY, data_uri_problem, quantity

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# The CRD's pattern for requests/limits values (a test keeps them equal): a non-negative
# Kubernetes quantity such as 250m, 1.5Gi or 2e3 (see the comment in crds/).
QUANTITY = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"
# Names a container may request: the standard ones, or `<DNS subdomain>/<name>` (extended).
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_EXTENDED = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_QUANTITY = re.compile(QUANTITY)
# The CRD's patterns for the ClickHouse source and the signals (a test keeps them equal).
CLICKHOUSE_URL = r"^https?://[^\s/?#@]+(:[0-9]+)?/?$"
SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
SECRET_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
NATS_SUBJECT = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_EXAMPLES = "such as 250m, 1.5, 512Mi, 1.5Gi or 2e3"


class InvalidSpec(ValueError):
    """The spec cannot be used; the message names the field and the fix."""


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              strict=True, frozen=True)


def _quantity(value: object) -> int | str:
    """A non-negative Kubernetes quantity, kept as given (an int or a string)."""
    if isinstance(value, float):
        raise ValueError(f"{value!r} is a float; quote it ('{value!r}') or use an integer")
    if isinstance(value, bool) or not isinstance(value, int | str):
        kind = {"dict": "an object", "list": "a list"}.get(type(value).__name__, repr(value))
        raise ValueError(f"{kind} is not a quantity; write an integer or a string {_EXAMPLES}")
    text = str(value)
    if text.startswith("-") and _QUANTITY.fullmatch(text[1:]):
        raise ValueError(f"{value!r} is negative; requests and limits must be >= 0")
    if not _QUANTITY.fullmatch(text):
        raise ValueError(f"{value!r} is not a Kubernetes quantity; write one {_EXAMPLES}")
    if (quantity(text) or 0) > MAX_QUANTITY:
        raise ValueError(f"{value!r} is more than 1Pi: no node has it, and a pod asking for it "
                         "never starts; write a real size " + _EXAMPLES)
    return value


def _resource_name(name: object) -> str:
    """A name a container may request: cpu, memory, ... or a domain-qualified extended one."""
    if not isinstance(name, str):
        raise ValueError(f"{name!r} is not a resource name")
    page_size = name.removeprefix("hugepages-")
    if name in STANDARD_RESOURCES or _EXTENDED.fullmatch(name) or \
            (page_size != name and _QUANTITY.fullmatch(page_size)):
        return name
    raise ValueError(f"{name!r} is not a container resource; use {', '.join(STANDARD_RESOURCES)}, "
                     "hugepages-<size> or a domain-qualified extended resource such as "
                     "nvidia.com/gpu")


Quantity = Annotated[int | str, PlainValidator(_quantity)]
ResourceName = Annotated[str, PlainValidator(_resource_name)]


class ResourcesSpec(_Camel):
    """A container's requests and limits, validated as the API server would (no other keys)."""

    model_config = ConfigDict(extra="forbid")

    requests: dict[ResourceName, Quantity] = Field(default_factory=dict)
    limits: dict[ResourceName, Quantity] = Field(default_factory=dict)

    def manifest(self) -> dict[str, dict[str, int | str]]:
        """The container's `resources` block; empty sections are left out."""
        return {key: dict(value) for key, value in (("requests", self.requests),
                                                    ("limits", self.limits)) if value}


ZONE_NAME = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"


def _known_zone(value: str | None) -> str | None:
    if value is not None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. 'Asia/Tehran', "
                             "'UTC')") from None
    return value


class CredentialsSecretSpec(_Camel):
    """A Secret (in the model's namespace) the ClickHouse user and password are read from by
    the pods themselves (secretKeyRef): the operator never reads it."""

    name: str = Field(max_length=253, pattern=SECRET_NAME)
    user_key: str = Field("username", max_length=253, pattern=SECRET_KEY)
    password_key: str = Field("password", max_length=253, pattern=SECRET_KEY)


class ClickHouseSpec(_Camel):
    """The table of raw kandoo records: training reads its window, a bridge polls it."""

    url: str = Field(max_length=512, pattern=CLICKHOUSE_URL)
    database: str = Field("snapp_raw_log", pattern=SQL_NAME)
    table: str = Field("kandoo_parameter_nats", pattern=SQL_NAME)
    credentials_secret: CredentialsSecretSpec | None = None


class DataSpec(_Camel):
    uris: list[str] | None = Field(None, min_length=1, max_length=64)
    clickhouse: ClickHouseSpec | None = None
    format: Literal["kandoo-csv", "snapshot-parquet"] = "kandoo-csv"
    input_timezone: str | None = Field(None, max_length=64, pattern=ZONE_NAME)
    lookback_days: float = Field(28, ge=1, le=365)
    holdout_days: float = Field(1, gt=0, le=30)

    @field_validator("uris")
    @classmethod
    def _safe_uris(cls, value: list[str] | None) -> list[str] | None:
        for index, uri in enumerate(value or []):
            if problem := data_uri_problem(uri):
                raise ValueError(f"uris[{index}] {uri[:80]!r}: {problem}")
        return value

    @field_validator("input_timezone")
    @classmethod
    def _known_input_zone(cls, value: str | None) -> str | None:
        return value if value == "city" else _known_zone(value)

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.uris is None) == (self.clickhouse is None):
            raise ValueError("set exactly one of uris (exported files) and clickhouse (the "
                             "table of raw kandoo records)")
        return self


class BridgeSpec(_Camel):
    """The signal bridge Deployment: `pulsar bridge`, shipped in the predictor image."""

    image: str = Field("ghcr.io/pulsar-dev/pulsar-predictor:0.1.0", min_length=1,
                       max_length=512, pattern=IMAGE_REF)
    resources: ResourcesSpec = Field(
        default_factory=lambda: ResourcesSpec(requests={"cpu": "100m", "memory": "256Mi"},
                                              limits={"memory": "512Mi"}))


class SignalsSpec(_Camel):
    """Where the predictors' live signals come from (see the CRD's description)."""

    source: Literal["external", "bridge", "nats"] = "external"
    nats_subject: str | None = Field(None, min_length=1, max_length=200, pattern=NATS_SUBJECT)
    bridge: BridgeSpec = Field(default_factory=BridgeSpec)

    @model_validator(mode="after")
    def _subject_with_nats(self) -> SignalsSpec:
        if (self.source == "nats") != (self.nats_subject is not None):
            raise ValueError("natsSubject is required with source nats and only with it")
        return self

    @property
    def needs_bridge(self) -> bool:
        """Whether this model asks for a bridge Deployment (polling ClickHouse or relaying)."""
        return self.source != "external"


class ElasticNetSpec(_Camel):
    alpha: float = Field(0.01, gt=0)
    l1_ratio: float = Field(0.5, ge=0, le=1)


class CnnSpec(_Camel):
    channels: int = Field(32, ge=4, le=512)
    epochs: int = Field(30, ge=1, le=1000)
    learning_rate: float = Field(0.003, gt=0, le=1)
    patience: int = Field(4, ge=1, le=100)
    seeds: int = Field(3, ge=1, le=16)


class TrainingSpec(_Camel):
    image: str = Field("ghcr.io/pulsar-dev/pulsar-trainer:0.1.0", min_length=1,
                       max_length=512, pattern=IMAGE_REF)
    resources: ResourcesSpec = Field(
        default_factory=lambda: ResourcesSpec(requests={"cpu": "1", "memory": "2Gi"},
                                              limits={"memory": "4Gi"}))
    schedule: str = Field("0 */6 * * *", pattern=r"^(\S+\s+){4}\S+$")
    timezone: str | None = Field(None, max_length=64, pattern=ZONE_NAME)
    backtest_folds: int | None = Field(None, ge=1, le=60)
    horizons_minutes: list[float] = Field(default_factory=lambda: [30.0, 60.0, 90.0],
                                          min_length=1, max_length=8)
    window: int = Field(12, ge=2, le=96)
    elastic_net: ElasticNetSpec = Field(default_factory=ElasticNetSpec)
    cnn: CnnSpec = Field(default_factory=CnnSpec)
    active_deadline_seconds: int = Field(3600, ge=60, le=86400)
    backoff_limit: int = Field(2, ge=0, le=10)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        return _known_zone(value)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        # The CRD's pattern only counts fields; ranges ("61 25 * * *") are checked here, once,
        # so a bad schedule is reported in status instead of failing every reconcile.
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression: minute 0-59, hour "
                             "0-23, day 1-31, month 1-12, weekday 0-6 (e.g. '0 */6 * * *')")
        return value

    @field_validator("horizons_minutes")
    @classmethod
    def _periods(cls, value: list[float]) -> list[float]:
        for horizon in value:
            if problem := horizon_problem(horizon):
                raise ValueError(problem)
        return value


class PromotionSpec(_Camel):
    policy: Literal["auto", "manual"] = "auto"
    min_improvement_over_persistence_pct: float = Field(5, ge=0, le=100)
    max_regression_vs_champion_pct: float = Field(2, ge=0, le=100)

    def to_policy(self) -> PromotionPolicy:
        return PromotionPolicy(self.policy, self.min_improvement_over_persistence_pct,
                               self.max_regression_vs_champion_pct)


class RolloutSpec(_Camel):
    """How a gate-passed version replaces a serving champion (see pulsar_core.live_evidence)."""

    strategy: Literal["direct", "shadow"] = "shadow"
    min_scored_forecasts: int = Field(500, ge=1, le=10_000_000)
    min_duration_seconds: int = Field(3600, ge=0, le=7 * 86400)
    margin_pct: float = Field(2, ge=0, le=100)
    rollback_regression_pct: float = Field(10, gt=0, le=1000)

    def to_policy(self) -> RolloutPolicy:
        return RolloutPolicy(self.min_scored_forecasts, float(self.min_duration_seconds),
                             self.margin_pct, self.rollback_regression_pct)


class AutoscalingSpec(_Camel):
    """The predictor's HorizontalPodAutoscaler: it owns the replica count when set."""

    min_replicas: int = Field(2, ge=1, le=50)
    max_replicas: int = Field(ge=1, le=100)
    target_cpu_utilization_percent: int = Field(70, ge=0, le=100,
                                                alias="targetCPUUtilizationPercent")
    target_requests_per_second: float | None = Field(None, gt=0, le=100000)

    @model_validator(mode="after")
    def _coherent(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"maxReplicas {self.max_replicas} must be at least minReplicas "
                             f"{self.min_replicas}")
        if not self.target_cpu_utilization_percent and self.target_requests_per_second is None:
            raise ValueError("set targetCPUUtilizationPercent above 0 or "
                             "targetRequestsPerSecond: the autoscaler needs at least one target")
        return self


class ServingSpec(_Camel):
    image: str = Field("ghcr.io/pulsar-dev/pulsar-predictor:0.1.0", min_length=1,
                       max_length=512, pattern=IMAGE_REF)
    replicas: int = Field(2, ge=0, le=50)
    resources: ResourcesSpec = Field(
        default_factory=lambda: ResourcesSpec(requests={"cpu": "250m", "memory": "512Mi"},
                                              limits={"memory": "1Gi"}))
    model_version: str | None = Field(None, pattern=r"^[1-9][0-9]*$")
    fallback: Fallback = Field(Fallback.ELASTICNET, strict=False)  # the CRD sends its value
    confidence_threshold: float = Field(0.5, ge=0, le=1)
    rollout_deadline_seconds: int = Field(600, ge=30, le=3600)
    autoscaling: AutoscalingSpec | None = None

    @model_validator(mode="after")
    def _cpu_request_for_autoscaling(self) -> ServingSpec:
        if self.autoscaling is not None and self.autoscaling.target_cpu_utilization_percent \
                and "cpu" not in self.resources.requests:
            raise ValueError("autoscaling on CPU needs spec.serving.resources.requests.cpu "
                             "(utilization is a percent of it); set it, or set "
                             "autoscaling.targetCPUUtilizationPercent to 0")
        return self

    @property
    def fewest_replicas(self) -> int:
        """Replicas the predictor keeps at least: the autoscaler's floor, else `replicas`."""
        return self.autoscaling.min_replicas if self.autoscaling else self.replicas


class SurgeModelSpec(_Camel):
    """`spec` of a SurgeModel; field names are the CRD's camelCase names."""

    city: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    city_id: int | None = Field(None, ge=0)
    service_type: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    service_type_id: int | None = Field(None, ge=0)
    registered_model: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9._]{0,126}[a-z0-9])?$")
    retrain_subject: str | None = Field(
        None, max_length=200, pattern=r"^pulsar\.retrain\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    data: DataSpec
    signals: SignalsSpec = Field(default_factory=SignalsSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    paused: bool = False

    @model_validator(mode="after")
    def _scope_of_the_table(self) -> SurgeModelSpec:
        if self.data.clickhouse is not None and self.city_id is None:
            raise ValueError("spec.cityId: spec.data.clickhouse needs it (the table holds "
                             "every city's records and the model reads only its own); set it")
        if self.signals.source == "bridge" and (self.data.clickhouse is None
                                                or self.city_id is None):
            raise ValueError("spec.signals.source: bridge polls the table of "
                             "spec.data.clickhouse for rows of spec.cityId; set both, or use "
                             "source nats or external")
        if self.signals.needs_bridge and not self.city_id:
            raise ValueError("spec.cityId: a signal bridge (spec.signals.source bridge or nats) "
                             "keeps only the records of spec.cityId; set it (1 or more)")
        if self.signals.needs_bridge and self.service_type_id == 0:
            raise ValueError("spec.serviceTypeId: a signal bridge filters on ids from 1; set "
                             "1 or more, or leave it unset for every service type")
        return self

    @property
    def signals_subject(self) -> str:
        """The subject the predictors read and a bridge feeds: one bridge per subject."""
        return signals_subject(self.city, self.service_type)


def parse_spec(raw: dict[str, Any]) -> SurgeModelSpec:
    """Parse a spec dict or raise InvalidSpec naming every bad field (`spec.training.window`)."""
    try:
        return SurgeModelSpec.model_validate(raw)
    except ValidationError as error:
        problems = [f"spec.{where}: {_message(issue)}" if (where := _where(issue))
                    else _message(issue) for issue in error.errors()]
        raise InvalidSpec("; ".join(problems)) from error


def _where(issue: ErrorDetails) -> str:
    """Dotted path of an issue; a bad map key is named by the key itself."""
    return ".".join(str(part) for part in issue["loc"] if part != "[key]")


def _message(issue: ErrorDetails) -> str:
    """pydantic's message, with the fix for unknown fields and without 'Value error, '."""
    if issue["type"] == "extra_forbidden":
        known = _field_names(issue["loc"][:-1])
        choices = " or ".join(filter(None, [", ".join(known[:-1]), *known[-1:]]))
        return f"unknown field; use {choices}" if known else "unknown field"
    if issue["type"] == "value_error":
        return str(issue["ctx"]["error"])
    if issue["type"] == "string_pattern_mismatch" and issue["ctx"]["pattern"] == IMAGE_REF:
        return (f"{str(issue['input'])[:80]!r} is not an image reference; write "
                "[registry[:port]/]path[:tag][@sha256:digest] in lower case, e.g. "
                "ghcr.io/pulsar-dev/pulsar-trainer:0.1.0")
    return issue["msg"]


def _field_names(loc: tuple[int | str, ...]) -> list[str]:
    """The camelCase field names of the model at `loc` (a path from the spec), if it is one."""
    model: type[BaseModel] = SurgeModelSpec
    for part in loc:
        fields = {key: field for name, field in model.model_fields.items()
                  for key in (name, field.alias)}
        annotation = fields[part].annotation if part in fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [field.alias or name for name, field in model.model_fields.items()]
