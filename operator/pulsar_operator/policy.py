"""What a tenant's SurgeModel may point Pulsar at: images, data and schedules.

Two layers. The fixed rules (spec_rules, checked while a spec is parsed) hold in every
cluster. The platform's policy here (OperatorSettings, chart values `policy`) narrows them:
allowed image and data prefixes, and the shortest gap between two scheduled trainings. A spec
outside it is InvalidSpec, naming the field and the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from croniter import croniter

if TYPE_CHECKING:
    from pulsar_operator.config import OperatorSettings
    from pulsar_operator.spec import SurgeModelSpec


@lru_cache(maxsize=1024)
def shortest_gap_minutes(schedule: str, firings: int = 200) -> float:
    """The shortest time between two firings of a cron `schedule` (over `firings` of them).
    Cached (bounded): walking 200 firings is most of a reconcile's CPU, and 1,000 models
    share a handful of schedules."""
    times = croniter(schedule, datetime(2026, 1, 1, tzinfo=UTC))
    previous = times.get_next(datetime)
    shortest = float("inf")
    for _ in range(firings):
        current = times.get_next(datetime)
        shortest = min(shortest, (current - previous).total_seconds() / 60)
        previous = current
    return shortest


@dataclass(frozen=True)
class Policy:
    """The platform's narrowing of the fixed rules (empty prefixes: anything they allow)."""

    image_prefixes: tuple[str, ...] = ()
    data_prefixes: tuple[str, ...] = ()
    min_schedule_minutes: float = 60.0

    @classmethod
    def of(cls, settings: OperatorSettings) -> Policy:
        return cls(tuple(settings.allowed_image_prefixes), tuple(settings.allowed_data_prefixes),
                   settings.min_schedule_minutes)

    def problems(self, spec: SurgeModelSpec) -> list[str]:
        found: list[str] = []
        images = (("spec.training.image", spec.training.image),
                  ("spec.serving.image", spec.serving.image),
                  ("spec.signals.bridge.image", spec.signals.bridge.image))
        for field, image in images:
            if self.image_prefixes and not image.startswith(self.image_prefixes):
                found.append(f"{field}: {image!r} is outside the platform's image policy "
                             f"(allowed prefixes: {', '.join(self.image_prefixes)}); use an "
                             "image from one of them (PULSAR_ALLOWED_IMAGE_PREFIXES)")
        for index, uri in enumerate(spec.data.uris or []):
            if self.data_prefixes and not uri.startswith(self.data_prefixes):
                found.append(f"spec.data.uris[{index}]: {uri!r} is outside the platform's "
                             f"data policy (allowed prefixes: {', '.join(self.data_prefixes)})"
                             "; move the data or ask for the prefix "
                             "(PULSAR_ALLOWED_DATA_PREFIXES)")
        gap = shortest_gap_minutes(spec.training.schedule)
        if gap < self.min_schedule_minutes:
            found.append(f"spec.training.schedule: {spec.training.schedule!r} trains every "
                         f"{gap:g} min at times; the platform's minimum is "
                         f"{self.min_schedule_minutes:g} min (PULSAR_MIN_SCHEDULE_MINUTES), "
                         "e.g. '0 */6 * * *'")
        return found
