"""A predictor's warm start from the signals stream as the signal bridge fills it (one row per
message): replayed a batch at a time (SignalFeed.ingest_many) against one message at a time
(SignalFeed.ingest, the way before), the same messages from the same stream in one process.

Usage: python bench/bench_warm_start.py [--hexagons 300] [--hours 24] [--sample 3000]
Publishes `--hexagons` x `--hours` x 8 snapshot rows of a synthetic city, one JSON row per
message, to a real nats-server's PULSAR_SIGNALS stream. Replays all of them batched, and the
first `--sample` one at a time (that way takes minutes per 10,000 messages); prints messages
per second for each, their ratio, the time each would take for the whole stream and for a
3,000-hexagon city's 192-hour window, and checks that both stored the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support starts the nats-server


async def _publish(url: str, subject: str, payloads: list[bytes]) -> None:
    import nats

    from pulsar_core.live_signals import ensure_signals_stream

    client = await nats.connect(url)
    await ensure_signals_stream(client.jetstream())
    for payload in payloads:
        await client.publish(subject, payload)
    await client.flush()
    await client.close()


async def _replay(url: str, subject: str, upto: int, batched: bool) -> tuple[float, object]:
    """Seconds to replay the stream up to sequence `upto` into a fresh feed, and the feed."""
    import nats
    from pulsar_predictor.buffer import LiveBuffer
    from pulsar_predictor.feed import SignalFeed
    from pulsar_predictor.metrics import Metrics
    from pulsar_predictor.warm import replay_signals

    from pulsar_core.settings import ServeSettings

    feed = SignalFeed(ServeSettings(city="bench", service_type="eco"),
                      LiveBuffer(periods=400, max_series=100_000), Metrics(), print)

    async def batch_at_once(batch: list[bytes]) -> None:
        await asyncio.to_thread(feed.ingest_many, batch)

    async def one_at_a_time(batch: list[bytes]) -> None:
        for payload in batch:
            await asyncio.to_thread(feed.ingest, payload)

    client = await nats.connect(url)
    since = datetime.now(UTC) - timedelta(hours=192)
    started = time.perf_counter()
    count = await replay_signals(client, subject, since, upto,
                                 batch_at_once if batched else one_at_a_time)
    seconds = time.perf_counter() - started
    await client.close()
    assert count == upto, (count, upto)
    return seconds, feed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hexagons", type=int, default=300)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--sample", type=int, default=3000)
    args = parser.parse_args()
    import pandas as pd

    from pulsar_core.contract import PERIOD, Col
    from pulsar_core.data.synthetic import generate_snapshots
    from pulsar_core.events import signals_subject
    from tests.predictor.payloads import as_rows
    from tests.support.services import running_nats

    city = generate_snapshots(n_hexagons=args.hexagons, service_types=(1,), days=2, seed=5,
                              mode="continuous")
    newest = city[Col.PERIOD_START].max()
    city = city[city[Col.PERIOD_START] > newest - args.hours * 8 * PERIOD].copy()
    shift = pd.Timestamp.now(tz="UTC").floor(PERIOD) - PERIOD - newest  # ends a period ago
    for column in (Col.PERIOD_START, Col.PERIOD_END):
        city[column] = city[column] + shift
    city = city.sort_values([Col.PERIOD_START, Col.HEXAGON])
    payloads = [json.dumps(row).encode() for row in as_rows(city)]
    subject = signals_subject("bench", "eco")
    with tempfile.TemporaryDirectory() as work, running_nats(Path(work) / "js") as server:
        asyncio.run(_publish(server.url, subject, payloads))
        total, sample = len(payloads), min(args.sample, len(payloads))
        batched, many = asyncio.run(_replay(server.url, subject, total, batched=True))
        single, one = asyncio.run(_replay(server.url, subject, sample, batched=False))
        check, first = asyncio.run(_replay(server.url, subject, sample, batched=True))
    same = first.buffer.frame().equals(one.buffer.frame())  # type: ignore[attr-defined]
    stored = many.buffer.row_count()  # type: ignore[attr-defined]
    fast, slow = total / batched, sample / single
    week = 3000 * 192 * 8
    print(f"messages: {total:,} (one row each), stored {stored:,}; one at a time on the first "
          f"{sample:,}")
    print(f"batched:          {fast:10,.0f} messages/s  ({batched:.1f} s for all)")
    print(f"one at a time:    {slow:10,.0f} messages/s  ({total / slow:.1f} s for all, "
          f"estimated)")
    print(f"ratio (one at a time / batched time): {fast / slow:.1f}x")
    print(f"a 3,000-hexagon city's 192-hour window ({week:,} messages): "
          f"batched {week / fast / 60:.1f} min, one at a time {week / slow / 3600:.1f} h")
    print(f"same rows stored both ways (first {sample:,}): {same}; batched sample took "
          f"{check:.2f} s")
    return 0 if same and stored == total else 1


if __name__ == "__main__":
    sys.exit(main())
