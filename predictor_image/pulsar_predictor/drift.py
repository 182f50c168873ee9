"""Drift alarm: live forecasts scored against the actuals that arrive later.

Every precomputed live forecast is kept per (hexagon, service, horizon, target period) until the
actual of its target period is in the live buffer and the period has closed; its absolute error
then joins a rolling window per horizon. When the rolling MAE of a horizon exceeds `ratio` times
the model's own evaluation MAE over at least `min_scored` forecasts, the predictor asks for a
retrain on the model's own retrain subject (once per cool-down; the message id dedupes repeats).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pulsar_core.contract import Col
from pulsar_core.contract import ForecastCol as F
from pulsar_core.events import RetrainRequest, model_retrain_subject
from pulsar_core.publisher import PublishError, publish_event_async
from pulsar_core.settings import ServeSettings
from pulsar_predictor.metrics import Metrics
from pulsar_predictor.slot import LoadedModel

log = logging.getLogger(__name__)

_KEY = [F.HEXAGON.value, F.SERVICE_TYPE.value, F.HORIZON_MINUTES.value,
        F.TARGET_PERIOD_START.value]
_EVAL_MAE = re.compile(r"^mae_(\d+(?:\.\d+)?)m_served$")


@dataclass(frozen=True)
class DriftPolicy:
    """When live errors count as drift (ServeSettings.drift_* in a deployment)."""

    ratio: float = 1.5  # live MAE / evaluation MAE that raises the alarm
    min_scored: int = 200  # scored forecasts of a horizon before it is judged
    window: int = 1000  # rolling window of absolute errors per horizon
    max_pending: int = 300_000  # forecasts waiting for their actual (memory bound)
    max_age_hours: float = 6.0  # a target this far behind the newest actual never gets one
    cooldown_seconds: float = 3600.0  # one retrain request per model version and cool-down

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> DriftPolicy:
        return cls(ratio=settings.drift_ratio, min_scored=settings.drift_min_scored,
                   window=settings.drift_window, max_pending=settings.drift_max_pending,
                   max_age_hours=settings.drift_max_age_hours,
                   cooldown_seconds=settings.drift_cooldown_seconds)


@dataclass(frozen=True)
class DriftAlarm:
    """The worst horizon over the threshold."""

    horizon: float
    live_mae: float
    eval_mae: float
    scored: int

    @property
    def ratio(self) -> float:
        return self.live_mae / self.eval_mae

    def reason(self) -> str:
        return (f"drift: live MAE@{self.horizon:g}m {self.live_mae:.1f} is {self.ratio:.1f}x "
                f"the evaluation's {self.eval_mae:.1f} over {self.scored} forecasts")


def evaluation_mae(metadata: dict[str, Any]) -> dict[float, float]:
    """Served-model MAE per horizon from bundle metadata (`metrics.mae_30m_served`...)."""
    out: dict[float, float] = {}
    for name, value in (metadata.get("metrics") or {}).items():
        match = _EVAL_MAE.match(str(name))
        if match and isinstance(value, int | float) and value > 0:
            out[float(match.group(1))] = float(value)
    return out


class DriftScorer:
    """Pure bookkeeping: pending forecasts, rolling absolute errors, the alarm decision."""

    def __init__(self, eval_mae: dict[float, float], policy: DriftPolicy) -> None:
        self.eval_mae = eval_mae
        self.policy = policy
        self.pending = pd.Series(dtype="float64", name=F.VALUE.value,
                                 index=pd.MultiIndex.from_arrays(
                                     [pd.Index([], dtype="int64"), pd.Index([], dtype="int64"),
                                      pd.Index([], dtype="float64"),
                                      pd.DatetimeIndex([], tz="UTC")], names=_KEY))
        self.errors: dict[float, deque[float]] = {}
        self.counts = {"scored": 0, "expired": 0, "dropped": 0}
        self.scored: list[pd.DataFrame] = []  # taken by the score outbox

    def take_scored(self) -> list[pd.DataFrame]:
        """The forecasts scored since the last call (key columns, value, actual, error)."""
        taken, self.scored = self.scored, []
        return taken

    def record(self, forecasts: pd.DataFrame) -> None:
        """Keep these forecasts until their actuals arrive (a recomputed one replaces the old)."""
        fresh = forecasts.loc[forecasts[F.VALUE].notna(), [*_KEY, F.VALUE.value]]
        fresh = fresh.set_index(_KEY)[F.VALUE.value].astype("float64")
        merged = pd.concat([self.pending, fresh])
        self.pending = merged[~merged.index.duplicated(keep="last")]
        overflow = len(self.pending) - self.policy.max_pending
        if overflow > 0:  # the oldest targets go first
            order = self.pending.index.get_level_values(F.TARGET_PERIOD_START.value).argsort(
                kind="stable")
            self.pending = self.pending.iloc[sorted(order[overflow:])]
            self.counts["dropped"] += overflow

    def score(self, actuals: pd.DataFrame, now: pd.Timestamp) -> int:
        """Score pending forecasts whose target period has closed and is in `actuals`."""
        if self.pending.empty or actuals.empty:
            return 0
        closed = actuals[actuals[Col.PERIOD_END] <= now]
        truth = pd.Series(closed[Col.DEMAND_SIGNAL].to_numpy("float64"), index=pd.MultiIndex.
                          from_frame(closed[[Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]]))
        pending = self.pending.index
        lookup = pending.droplevel(F.HORIZON_MINUTES.value)
        hit = lookup.isin(truth.index)
        scored = self.pending[hit].reset_index()
        scored["actual"] = truth.reindex(lookup[hit]).to_numpy()
        scored = scored.sort_values(F.TARGET_PERIOD_START.value)
        for horizon, group in scored.groupby(F.HORIZON_MINUTES.value):
            window = self.errors.setdefault(float(horizon), deque(maxlen=self.policy.window))
            window.extend((group[F.VALUE.value] - group["actual"]).abs().tolist())
        targets = pending.get_level_values(F.TARGET_PERIOD_START.value)
        expired = ~hit & (targets < actuals[Col.PERIOD_START].max()
                               - pd.Timedelta(hours=self.policy.max_age_hours))
        self.pending = self.pending[~hit & ~expired]
        if not scored.empty:  # for the score events (the shadow rollout pairs on them)
            self.scored.append(scored.assign(error=(scored[F.VALUE.value]
                                                    - scored["actual"]).abs()))
        self.counts["scored"] += len(scored)
        self.counts["expired"] += int(expired.sum())
        return len(scored)

    def live_mae(self) -> dict[float, tuple[float, int]]:
        """Rolling MAE and how many errors it averages, per horizon."""
        return {h: (sum(e) / len(e), len(e)) for h, e in sorted(self.errors.items()) if e}

    def alarm(self) -> DriftAlarm | None:
        """The horizon with the highest live/eval ratio above the policy's, if judged."""
        judged = [DriftAlarm(h, mae, self.eval_mae[h], n) for h, (mae, n) in
                  self.live_mae().items() if h in self.eval_mae and n >= self.policy.min_scored]
        worst = max(judged, key=lambda a: a.ratio, default=None)
        return worst if worst is not None and worst.ratio > self.policy.ratio else None


class DriftMonitor:
    """Feeds a scorer from each live refresh, exports its gauges, publishes the alarm."""

    def __init__(self, settings: ServeSettings, metrics: Metrics,
                 policy: DriftPolicy | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.policy = policy or DriftPolicy.from_settings(settings)
        self.scorer: DriftScorer | None = None
        self.model: tuple[str, str] | None = None
        self.observed_version: int | None = None  # the buffer version last scored against
        self._quiet_until = 0.0

    def observe(self, model: LoadedModel, buffer_version: int, forecasts: pd.DataFrame,
                actuals: pd.DataFrame, now: pd.Timestamp) -> DriftAlarm | None:
        """Score what arrived, keep the new forecasts; the alarm when one is due (a thread)."""
        if self.scorer is None or self.model != (model.name, model.version):
            self._reset(model)
        assert self.scorer is not None
        before = dict(self.scorer.counts)
        self.scorer.score(actuals, now)
        self.scorer.record(forecasts)
        for outcome, count in self.scorer.counts.items():
            if count > before[outcome]:
                self.metrics.drift_forecasts.labels(outcome).inc(count - before[outcome])
        self.metrics.drift_pending.set(len(self.scorer.pending))
        for horizon, (mae, _) in self.scorer.live_mae().items():
            self.metrics.drift_live_mae.labels(f"{horizon:g}").set(mae)
            if horizon in self.scorer.eval_mae:
                ratio = mae / self.scorer.eval_mae[horizon]
                self.metrics.drift_ratio.labels(f"{horizon:g}").set(ratio)
        self.observed_version = buffer_version
        return self.scorer.alarm() if time.time() >= self._quiet_until else None

    def _reset(self, model: LoadedModel) -> None:
        eval_mae = evaluation_mae(model.metadata)
        if not eval_mae:
            log.warning("model %s version %s carries no evaluation MAE (metrics.mae_<h>m_served)"
                        "; live MAE is exported but no drift alarm can be raised",
                        model.name, model.version)
        self.scorer = DriftScorer(eval_mae, self.policy)
        self.model = (model.name, model.version)
        self._quiet_until = 0.0
        self.metrics.drift_live_mae.clear()
        self.metrics.drift_ratio.clear()

    def subject(self) -> str:
        """This model's own retrain subject (never another namespace's model of the scope)."""
        settings = self.settings
        return settings.retrain_subject or model_retrain_subject(
            settings.registered_model, settings.city, settings.service_type)

    async def publish(self, model: LoadedModel, alarm: DriftAlarm) -> bool:
        """Ask this model's retrain subject for a retrain; quiet for the cool-down after."""
        now = time.time()
        if not self.settings.nats_url:
            log.warning("%s, but PULSAR_NATS_URL is unset: no retrain request sent",
                        alarm.reason())
            self.metrics.drift_alarms.labels("no_nats").inc()
            self._quiet_until = now + self.policy.cooldown_seconds
            return False
        bucket = int(now // self.policy.cooldown_seconds)
        request = RetrainRequest(reason=alarm.reason(),
                                 requested_by=f"pulsar-predictor {model.name}:{model.version}")
        try:
            route = await publish_event_async(
                self.settings.nats_url, self.subject(), request,
                msg_id=f"drift:{model.name}:{model.version}:{bucket}")
        except PublishError as error:
            log.warning("drift alarm not published (retried after the next refresh): %s", error)
            self.metrics.drift_alarms.labels("failed").inc()
            return False
        log.warning("%s: retrain requested (%s)", alarm.reason(), route)
        self.metrics.drift_alarms.labels("published").inc()
        self._quiet_until = now + self.policy.cooldown_seconds
        return True


async def watch(monitor: DriftMonitor, model: LoadedModel, buffer_version: int,
                forecasts: pd.DataFrame, actuals: Any, executor: Any) -> None:
    """One observation off the event loop (`actuals` is called there), then the alarm if due."""
    now = pd.Timestamp.now(tz="UTC")
    alarm = await asyncio.get_running_loop().run_in_executor(
        executor, lambda: monitor.observe(model, buffer_version, forecasts, actuals(), now))
    if alarm is not None and monitor.settings.role == "champion":  # a shadow only gets scored
        await monitor.publish(model, alarm)
