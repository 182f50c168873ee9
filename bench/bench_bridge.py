"""The signal bridge on a paced replay: latency, cost, and exactly-once across a SIGKILL and a
ClickHouse restart.

Synthetic raw kandoo records (`pulsar_core.data.synthetic`, N hexagons, one service type) are
inserted into a local ClickHouse period by period. The bridge runs as its own process
(`runtime.run`, as `pulsar bridge` runs it) with its clock read from a file, so the replay is
time-compressed: after inserting a period the bench moves that clock past the period's end, and
the bridge's next poll sees it closed. Printed:
  latency   from the insert of a period's rows returning (its last row landed) to each of its
            rows arriving on pulsar.signals.<city>.<service>: p50 / p99, beside the poll interval
  cost      bridge CPU seconds and peak RSS, per 10,000 hexagons (one period each)
  exactly   duplicates and lost periods on the stream after the bridge was SIGKILLed right after
            a period was inserted and ClickHouse was restarted mid-replay (both must be 0), and
            whether every published row equals load_raw_records on the same rows
Run: `python bench/bench_bridge.py [--hexagons 10000 --periods 12 --poll 1.0]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bridge_process(settings_json: str, clock_file: str) -> None:
    """The bridge, as `pulsar bridge` runs it, with the replay's clock."""
    import logging

    from pulsar_bridge.runtime import run

    from pulsar_core.settings import BridgeSettings

    logging.basicConfig(level=logging.WARNING)
    clock_path = Path(clock_file)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await run(BridgeSettings(**json.loads(settings_json)), stop,
                  clock=lambda: float(clock_path.read_text()))

    asyncio.run(main())


class Replay:
    """The bench side: ClickHouse, NATS, the bridge process, arrivals on the subject."""

    def __init__(self, args: argparse.Namespace, clickhouse: Any, nats_url: str, work: Path):
        self.args = args
        self.clickhouse = clickhouse
        self.nats_url = nats_url
        self.clock = work / "clock"
        self.log = work / "bridge.log"
        self.arrived: dict[tuple[int, int, int], float] = {}  # hexagon, service, period
        self.process: subprocess.Popen[bytes] | None = None
        self.cpu = 0.0
        self.peak_rss = 0
        self.settings = {
            "clickhouse_url": clickhouse.url, "nats_url": nats_url, "city": "bench",
            "city_id": 1, "service_type": "all", "poll_seconds": args.poll,
            "close_after_seconds": 0, "lateness_seconds": 900, "backfill_hours": 1,
            "slice_hours": 1, "dedupe_window_seconds": 3600, "host": "127.0.0.1",
            "port": _free_port()}

    def set_clock(self, seconds: float) -> None:
        tmp = self.clock.with_suffix(".tmp")
        tmp.write_text(repr(seconds))
        tmp.replace(self.clock)

    def start_bridge(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--bridge", json.dumps(self.settings), str(self.clock)],
            stdout=self.log.open("a"), stderr=subprocess.STDOUT)

    def sample(self) -> None:
        import psutil

        if self.process is None or self.process.poll() is not None:
            return
        try:
            proc = psutil.Process(self.process.pid)
            self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
            self._cpu_now = sum(proc.cpu_times()[:2])
        except psutil.Error:
            pass

    def end_bridge(self, sig: int) -> None:
        assert self.process is not None
        self.sample()
        self.cpu += getattr(self, "_cpu_now", 0.0)
        self._cpu_now = 0.0
        self.process.send_signal(sig)
        self.process.wait(timeout=60)
        self.process = None

    async def on_signal(self, msg: Any) -> None:
        row = json.loads(msg.data)
        import pandas as pd

        key = (int(row["hexagon"]), int(row["service_type"]),
               int(pd.Timestamp(row["period_start"]).timestamp()))
        self.arrived.setdefault(key, time.perf_counter())

    async def wait_period(self, period: int, expected: int, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for (_, _, p) in self.arrived if p == period) >= expected:
                return True
            self.sample()
            await asyncio.sleep(0.02)
        return False


def _free_port() -> int:
    from pulsar_cli.demo_stack import free_port

    return free_port()


def make_records(work: Path, hexagons: int, periods: int) -> Any:
    import pandas as pd

    from pulsar_core.contract import PERIOD
    from tests.bridge.support import recent_records

    end = pd.Timestamp.now(tz="UTC").floor(PERIOD) - pd.Timedelta(hours=2)
    return recent_records(work, end=end, periods=periods, hexagons=hexagons, seed=11)


async def replay(args: argparse.Namespace, bench: Replay, records: Any) -> dict[str, Any]:
    import nats
    import pandas as pd

    from pulsar_core.contract import PERIOD, RawCol
    from tests.bridge.support import expected_snapshots

    periods = sorted(records[RawCol.CLICKHOUSE_TIME].dt.floor(PERIOD).unique())
    kill_at, restart_at = len(periods) // 3, 2 * len(periods) // 3
    bench.set_clock(periods[0].timestamp())
    nc = await nats.connect(bench.nats_url)
    await nc.subscribe("pulsar.signals.bench.all", cb=bench.on_signal)
    bench.start_bridge()
    latencies: list[float] = []
    disrupted = []
    for index, start in enumerate(periods):
        rows = records[records[RawCol.CLICKHOUSE_TIME].dt.floor(PERIOD) == start]
        if index == restart_at:
            await asyncio.to_thread(bench.clickhouse.stop)
            await asyncio.sleep(2 * args.poll)
            await asyncio.to_thread(bench.clickhouse.start)
            disrupted.append(index)
        await asyncio.to_thread(bench.clickhouse.insert_frame, rows)
        landed = time.perf_counter()
        bench.set_clock((start + PERIOD).timestamp() + 0.5)
        if index == kill_at:  # SIGKILL while it polls/publishes this period, start another
            await asyncio.sleep(args.poll * 0.6)
            bench.end_bridge(signal.SIGKILL)
            bench.start_bridge()
            disrupted.append(index)
        expected = len(expected_snapshots(rows, start + PERIOD))
        period = int(start.timestamp())
        if not await bench.wait_period(period, expected):
            print(f"period {start} incomplete after the timeout", file=sys.stderr)
        if index not in disrupted:
            latencies += [t - landed for (_, _, p), t in bench.arrived.items() if p == period]
    await asyncio.sleep(3 * args.poll)  # let any stray re-publish land before counting
    bench.end_bridge(signal.SIGTERM)
    await nc.close()
    counted = await _stream_counts(bench.nats_url, records, periods[-1] + PERIOD)
    return {"latencies": latencies, "periods": len(periods), "disrupted": disrupted,
            **counted, "end": pd.Timestamp(periods[-1])}


async def _stream_counts(url: str, records: Any, before: Any) -> dict[str, Any]:
    import pandas as pd

    from tests.bridge.support import (
        count_per_key,
        expected_snapshots,
        latest_frame,
        signal_messages,
    )

    messages = await signal_messages(url, "pulsar.signals.bench.all")
    counts = count_per_key(messages)
    expected = expected_snapshots(records, before)
    keys = {(int(h), int(s), p.isoformat()) for h, s, p in
            expected[["hexagon", "service_type", "period_start"]].itertuples(index=False)}
    seen = {(int(h), int(s), pd.Timestamp(p).isoformat()) for h, s, p in counts}
    published = latest_frame(messages)
    try:
        pd.testing.assert_frame_equal(published, expected)
        equal = True
    except AssertionError:
        equal = False
    return {"messages": len(messages), "rows_expected": len(expected),
            "duplicates": sum(n - 1 for n in counts.values()), "lost_rows": len(keys - seen),
            "lost_periods": len({k[2] for k in keys - seen}), "values_equal": equal}


def report(args: argparse.Namespace, bench: Replay, result: dict[str, Any]) -> None:
    import numpy as np

    lat = np.asarray(result["latencies"]) * 1000
    periods = result["periods"]
    per_10k = 10_000 / args.hexagons
    print(f"bridge replay: {args.hexagons:,} hexagons x {periods} periods, poll interval "
          f"{args.poll:g} s (time-compressed: the clock moves past a period once inserted)")
    if len(lat):
        print(f"latency last row landed -> row on the subject: p50 {np.percentile(lat, 50):,.0f}"
              f" ms, p99 {np.percentile(lat, 99):,.0f} ms over {len(lat):,} rows "
              f"({periods - len(result['disrupted'])} undisturbed periods; poll interval "
              f"{args.poll * 1000:,.0f} ms, so ~{args.poll * 500:,.0f} ms of p50 is waiting)")
    print(f"cost: {bench.cpu / periods * per_10k:.2f} CPU s per 10,000 hexagon-periods "
          f"(total {bench.cpu:.1f} s), peak RSS {bench.peak_rss / 2**20:,.0f} MiB at "
          f"{args.hexagons:,} hexagons")
    print(f"exactly once across a SIGKILL (period {result['disrupted'][0]}) and a ClickHouse "
          f"restart (period {result['disrupted'][-1]}): duplicates {result['duplicates']}, "
          f"lost periods {result['lost_periods']} (lost rows {result['lost_rows']}), "
          f"{result['messages']:,} messages for {result['rows_expected']:,} rows; values equal "
          f"load_raw_records: {result['values_equal']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hexagons", type=int, default=10_000)
    parser.add_argument("--periods", type=int, default=12)
    parser.add_argument("--poll", type=float, default=1.0, help="the bridge's poll_seconds")
    parser.add_argument("--bridge", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bridge:
        bridge_process(*args.bridge)
        return 0

    from tests.support.clickhouse import SKIP_REASON, clickhouse_binary, running_clickhouse
    from tests.support.services import running_nats

    if clickhouse_binary() is None:
        print(f"skipped: {SKIP_REASON}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = make_records(work, args.hexagons, args.periods)
        with running_clickhouse(work / "ch") as clickhouse, \
                running_nats(work / "js") as nats_server:
            clickhouse.create_kandoo_table()
            bench = Replay(args, clickhouse, nats_server.url, work)
            try:
                result = asyncio.run(replay(args, bench, records))
            finally:
                if bench.process is not None:
                    bench.process.kill()
            report(args, bench, result)
            if os.environ.get("BENCH_BRIDGE_LOG"):
                print(bench.log.read_text()[-4000:])
    return 0 if result["duplicates"] == 0 and result["lost_periods"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
