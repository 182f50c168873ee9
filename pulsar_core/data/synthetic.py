"""Synthetic kandoo-like snapshots (and raw exports) with the real Tehran data's shape.

Measured on ../shared/data/tehran_kandoo_snapshots.parquet and mimicked here: daily runs of
~10-11 consecutive 7.5-minute periods (22:45-00:00 UTC; some days 13:30-14:37, rarely 08:00),
truncated or missing runs, demand floor 8 (~1/3 of rows), few distinct values, the sawtooth
(:00/:15/:30/:45 periods carry ~1.7x the records of :07:30/:22:30 ones), surge -28..30 %,
cumulative clipped at -50/200 %, and the leaky proxies derived exactly as upstream
(`kandoo.proxy_columns`). Demand comes from a smooth latent activity per hexagon (AR(1) in time,
averaged over H3 neighbours) plus noise, so it is forecastable better than persistence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from pulsar_core.contract import PERIOD, SNAPSHOT_DTYPES, Col
from pulsar_core.data.geography import city_cells, smooth_field
from pulsar_core.data.kandoo import RECORDS, proxy_columns

PERIOD_NS = PERIOD.value
DAY_PERIODS = 192
# periods (19:00-24:00 UTC) of a "long_runs" session: a window (12) plus 90 minutes (12) fit
LONG_RUN = 40
MODES = ("runs", "long_runs", "continuous")
SERVICE_SCALE = {1: 1.0, 2: 1.0, 3: 0.3, 5: 0.4, 7: 0.55, 11: 0.2}
RULE_SHEETS = np.array([5470, 5772, 5773, 6320, 6516, 6611, 6650, 6660])
CUMULATIVE_BASES = (np.array([0, 75, -20, 140, -30, 18, 34]),
                    np.array([0.38, 0.3, 0.1, 0.08, 0.04, 0.05, 0.05]))
PLACE_W = (0.6, 0.7)
LOCAL_W = 0.55
NOISE_W = 0.15
ACT_SCALE = 1.5
ON_RATE, OFF_RATE = 0.73, 0.01
LEVEL_W = 9.0
ZERO_BELOW = 4.5
KICK = 16.0
PREV_CUM = "_prev_cumulative"  # the previous period's cumulative surge (for raw records)


@dataclass(frozen=True)
class _Timeline:
    starts: np.ndarray  # period starts, int64 ns UTC
    session: np.ndarray  # which run (session) each period belongs to
    position: np.ndarray  # index of the period within its session
    length: np.ndarray  # periods in the period's session


def _sessions(start: pd.Timestamp, days: int, rng: np.random.Generator,
              long: bool = False) -> list[tuple[int, int]]:
    out = []
    for day in range(days):
        midnight = start + pd.Timedelta(days=day)
        if long:  # the demo's city: one 5-hour run a day, so 90-minute targets exist
            out.append((midnight + pd.Timedelta(hours=19), LONG_RUN))
        elif rng.random() < 0.15:
            out.append((midnight + pd.Timedelta(hours=13, minutes=30), 10))
        else:
            out.append((midnight + pd.Timedelta(hours=22, minutes=45), 11))
        if rng.random() < 0.1:
            out.append((midnight + pd.Timedelta(hours=8), 8))
    return sorted((ts.value, n) for ts, n in out)


def _timeline(start: pd.Timestamp, days: int, mode: str, rng: np.random.Generator) -> _Timeline:
    if mode == "continuous":
        sessions = [(start.value + d * DAY_PERIODS * PERIOD_NS, DAY_PERIODS) for d in range(days)]
    else:
        sessions = _sessions(start, days, rng, long=mode == "long_runs")
    lengths = np.array([n for _, n in sessions])
    session = np.repeat(np.arange(len(sessions)), lengths)
    position = np.concatenate([np.arange(n) for n in lengths])
    starts = np.array([s for s, _ in sessions])[session] + position * PERIOD_NS
    return _Timeline(starts, session, position, lengths[session])


def _ar1(noise: np.ndarray, rho: float) -> np.ndarray:
    """Unit-variance AR(1) along the last axis: smooth, hence forecastable."""
    return np.asarray(lfilter([np.sqrt(1 - rho**2)], [1.0, -rho], noise, axis=-1))


def _activity(cells: np.ndarray, dist: np.ndarray, types: np.ndarray, line: _Timeline,
              runs: bool, rng: np.random.Generator) -> np.ndarray:
    """Latent activity (series x periods): place x service x time of day x smooth noise."""
    n_cells, n_t = len(cells), len(line.starts)
    radial = np.exp(-dist / (0.5 * max(dist.max(), 1.0)))
    field = smooth_field(cells, rng.normal(size=n_cells))
    place = PLACE_W[0] * np.log(radial) + PLACE_W[1] * field / max(field.std(), 1e-9)
    local = smooth_field(cells, _ar1(rng.normal(size=(n_cells, n_t)), 0.9))
    local /= max(local.std(), 1e-9)
    city = _ar1(rng.normal(size=n_t), 0.95)
    hours = (line.starts // 10**9 % 86400) / 3600.0
    profile = 0.35 * np.cos(2 * np.pi * (hours - 18.0) / 24.0) + 0.2 * city
    if runs:  # session edges are partial periods upstream: fewer records, lower demand
        edge = (line.position == 0) | (line.position == line.length - 1)
        profile = profile + np.where(edge, np.log(0.7), 0.0)
    scale = np.log([SERVICE_SCALE.get(int(t), 0.35) for t in types])
    log_act = (np.repeat(place[:, None] + LOCAL_W * local, len(types), axis=0)
               + np.tile(scale, n_cells)[:, None] + profile[None, :])
    log_act += NOISE_W * rng.normal(size=log_act.shape)
    return np.asarray(ACT_SCALE * np.exp(log_act))


def _presence(n_series: int, line: _Timeline, base: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Which (series, period) exist: whole runs missing, truncated starts/ends, rare holes."""
    n_sessions = int(line.session.max()) + 1
    rate = 0.45 + 0.45 * (np.argsort(np.argsort(base)) / max(n_series - 1, 1))
    active = rng.random((n_series, n_sessions)) < rate[:, None]
    lengths = np.bincount(line.session, minlength=n_sessions)
    cut_start = np.where(rng.random(active.shape) < 0.12,
                         rng.integers(1, lengths, size=active.shape), 0)
    cut_end = np.where(rng.random(active.shape) < 0.12,
                       rng.integers(1, lengths, size=active.shape), 0)
    pos, length = line.position[None, :], line.length[None, :]
    mask = (active[:, line.session] & (pos >= cut_start[:, line.session])
            & (pos < length - cut_end[:, line.session]))
    return mask & (rng.random(mask.shape) >= 0.01)


def _simulate(center: tuple[float, float], n_hexagons: int, service_types: Sequence[int],
              days: int, start: str | pd.Timestamp, mode: str, resolution: int,
              mixed_resolution: bool, seed: int, city_id: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cells, dist = city_cells(center, n_hexagons, resolution, rng, mixed_resolution)
    types = np.array(sorted(set(int(t) for t in service_types)), dtype=np.int64)
    origin = pd.Timestamp(start)
    origin = (origin.tz_localize("UTC") if origin.tzinfo is None else origin.tz_convert("UTC"))
    line = _timeline(origin.floor("D"), days, mode, rng)
    act = _activity(cells, dist, types, line, mode != "continuous", rng)
    n_series = act.shape[0]
    on_phase = (line.starts // 10**9) % 900 == 0
    # Upstream, :07:30/:22:30 periods hold one record and :00/:15/:30/:45 ones mostly two:
    # that record-count term is the sawtooth.
    extra = np.where(on_phase, ON_RATE, OFF_RATE)[None, :]
    records = 1 + (rng.random(act.shape) < extra)
    level = LEVEL_W * act + rng.normal(0.0, 1.5, size=act.shape)
    magnitude = np.where(level < ZERO_BELOW, 0.0, np.round(np.minimum(level, 30.0)))
    sign = np.where(rng.random(n_series) < 0.3, -1.0, 1.0)[:, None]
    surge = sign * np.where(sign < 0, np.minimum(magnitude, 28.0), magnitude)
    mask = np.ones_like(act, bool) if mode == "continuous" else _presence(
        n_series, line, act.mean(axis=1), rng)
    base = rng.choice(CUMULATIVE_BASES[0], size=n_series, p=CUMULATIVE_BASES[1])
    # Only strong surges move the cumulative surge, which then decays slowly (piecewise flat).
    kicks = np.where(np.abs(surge) >= KICK, surge / 2.0, 0.0) * mask
    drift = lfilter([1.0], [1.0, -0.95], kicks, axis=1)
    cumulative = np.clip(np.round(base[:, None] + drift), -50.0, 200.0)
    prev = np.concatenate([base[:, None].astype(float), cumulative[:, :-1]], axis=1)
    s_idx, t_idx = np.nonzero(mask)
    n = records[s_idx, t_idx]
    pct = surge[s_idx, t_idx]
    proxies = proxy_columns(n, n * np.abs(pct))
    unit = np.where(rng.random(n_series) < 0.3, 250.0, 1000.0)[s_idx]
    rule = np.where(rng.random(n_series) < 0.15, 0, rng.choice(RULE_SHEETS, n_series))
    rule[np.isin(np.tile(types, len(cells)), (2, 3))] = 0  # Plus and Rose carry none upstream
    starts = pd.to_datetime(line.starts[t_idx], utc=True)
    frame = pd.DataFrame({
        Col.HEXAGON: np.repeat(cells, len(types))[s_idx],
        Col.SERVICE_TYPE: np.tile(types, len(cells))[s_idx],
        Col.CITY_ID: np.full(len(s_idx), city_id, dtype=np.int64),
        Col.PERIOD_START: starts,
        Col.PERIOD_END: starts + PERIOD,
        **proxies,
        Col.RULE_SHEET_ID: pd.array(rule[s_idx], dtype="Int64"),
        Col.SURGE_PERCENT: pct,
        Col.SURGE_ABSOLUTE: pct * 1000.0,
        Col.CUMULATIVE_SURGE_PERCENT: cumulative[s_idx, t_idx],
        Col.CUMULATIVE_SURGE_ABSOLUTE: cumulative[s_idx, t_idx] * unit,
        RECORDS: n,
        PREV_CUM: prev[s_idx, t_idx],
    })
    frame[Col.RULE_SHEET_ID] = frame[Col.RULE_SHEET_ID].mask(frame[Col.RULE_SHEET_ID] == 0)
    return frame


def generate_snapshots(
    *,
    center: tuple[float, float] = (35.6892, 51.3890),
    n_hexagons: int = 300,
    service_types: Sequence[int] = (1, 2, 3),
    days: int = 4,
    start: str | pd.Timestamp = "2025-11-19",
    mode: Literal["runs", "long_runs", "continuous"] = "runs",
    resolution: int = 8,
    mixed_resolution: bool = False,
    seed: int = 7,
    city_id: int = 1,
) -> pd.DataFrame:
    """Snapshots (contract dtypes, sorted by hexagon, service type, period) for a synthetic city.

    `mode="runs"` mimics the real daily runs and gaps; `"long_runs"` is the demo's city: the same
    floor, sawtooth, leaky proxies, missing and truncated runs and holes, but one 5-hour run a
    day, long enough for every horizon up to 90 minutes to have targets; `"continuous"` fills
    every period of every day (scale tests). The same arguments always give the same frame.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    frame = _simulate(center, n_hexagons, service_types, days, start, mode, resolution,
                      mixed_resolution, seed, city_id)
    return frame[list(SNAPSHOT_DTYPES)].astype(SNAPSHOT_DTYPES)


def simulate_records(snapshots_with_counts: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Raw kandoo records whose aggregation (`kandoo.records_to_snapshots`) gives the snapshots.

    Each period's records carry its surge; all but the last carry the previous cumulative surge,
    so only the last record's values survive aggregation, as upstream.
    """
    frame = snapshots_with_counts
    rng = np.random.default_rng(seed + 1)
    n = frame[RECORDS].to_numpy()
    row = np.repeat(np.arange(len(frame)), n)
    rank = np.arange(len(row)) - np.repeat(np.cumsum(n) - n, n)
    last = rank == n[row] - 1
    # Distinct seconds inside the period, increasing with the record's rank.
    offset = (rank * 450 // n[row] + rng.integers(0, 450 // 3, len(row)) // n[row]).astype(int)
    start = frame[Col.PERIOD_START].to_numpy()[row]
    time = pd.to_datetime(start, utc=True) + pd.to_timedelta(offset, unit="s")
    cum = np.where(last, frame[Col.CUMULATIVE_SURGE_PERCENT].to_numpy()[row],
                   frame[PREV_CUM].to_numpy()[row])
    unit = (frame[Col.CUMULATIVE_SURGE_ABSOLUTE] / frame[Col.CUMULATIVE_SURGE_PERCENT]
            ).fillna(1000.0).replace([np.inf, -np.inf], 1000.0).to_numpy()[row]
    pct = frame[Col.SURGE_PERCENT].to_numpy()[row]
    hexes = frame[Col.HEXAGON].to_numpy()[row]
    rule = frame[Col.RULE_SHEET_ID].fillna(0).to_numpy("int64")[row]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return pd.DataFrame({
        "from": pd.to_datetime(start, utc=True).strftime("%Y-%m-%d %H:%M:%S"),
        "to": (pd.to_datetime(start, utc=True) + PERIOD).strftime("%Y-%m-%d %H:%M:%S"),
        "service_type": frame[Col.SERVICE_TYPE].to_numpy()[row],
        "city_id": frame[Col.CITY_ID].to_numpy()[row],
        "hex_id": hexes,
        "rule_sheet_id": rule,
        "surge_percent": pct,
        "cumulative_surge_percent": cum,
        "surge_absolute": pct * 1000.0,
        "cumulative_surge_absolute": np.round(cum * unit, 6),
        "rule_id": np.where(rule > 0, rule * 10 + 1, 0),
        "increase_factor": 1.0,
        "decrease_factor": 1.0,
        "resolution": 8,
        "reason": np.where(pct > 0, "demand", np.where(pct < 0, "supply", "none")),
        "absolute_reason": "",
        "accept_rate": frame[Col.ACCEPTANCE_RATE].to_numpy()[row],
        "price_cnvr": frame[Col.PRICE_CONVERSION].to_numpy()[row],
        "logstash_time": stamp,
        "created_date": time.strftime("%Y-%m-%d"),
        "clickhouse_time": stamp,
    })


def generate_kandoo_csv(
    path: str | Path,
    *,
    n_hexagons: int = 60,
    service_types: Sequence[int] = (1, 2, 3),
    days: int = 2,
    seed: int = 7,
    **options: Any,
) -> pd.DataFrame:
    """Write a ClickHouse-style `kandoo_parameter_nats` CSV export; return its snapshots.

    `options` are those of `generate_snapshots`. Loading the file back (kandoo-csv) gives
    exactly the returned snapshots.
    """
    frame = _simulate(
        options.pop("center", (35.6892, 51.3890)), n_hexagons, service_types, days,
        options.pop("start", "2025-11-19"), options.pop("mode", "runs"),
        options.pop("resolution", 8), options.pop("mixed_resolution", False), seed,
        options.pop("city_id", 1),
    )
    if options:
        raise TypeError(f"unknown options: {sorted(options)}")
    records = simulate_records(frame, seed)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    records.to_csv(target, index=False)
    return frame[list(SNAPSHOT_DTYPES)].astype(SNAPSHOT_DTYPES)
