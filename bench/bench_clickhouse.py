"""Training data from ClickHouse vs from the CSV export of the same rows, at the real city's scale.

A week of synthetic raw kandoo records (the generator's export: 4,000 hexagons x 3 service types,
about the real file's 510k snapshots) is written as CSV and inserted into a local ClickHouse
server (Debian's clickhouse-server, started here in a temp dir). Each load runs in its own
subprocess so its peak RSS is its own:
  csv        load_snapshots(export.csv, city_id=1)              (the baseline)
  clickhouse load_clickhouse(table, city_id=1)                  (query + stream + aggregate)
Printed: rows read, rejected by reason, snapshots and a content hash of the snapshots (they must
be identical), wall seconds and the ratio clickhouse / csv, and peak RSS of each. The server's
own RSS is shown beside it. Run: `python bench/bench_clickhouse.py [--hexagons 4000]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(kind: str, target: str, password: str) -> dict[str, object]:
    """One load in this process: seconds, peak RSS, counts and the snapshots' hash."""
    import pandas as pd

    from pulsar_core.data.clickhouse import ClickHouseTable
    from pulsar_core.data.clickhouse_window import load_clickhouse
    from pulsar_core.data.loading import load_snapshots

    t0 = time.perf_counter()
    if kind == "csv":
        loaded = load_snapshots(target, city_id=1)
    else:
        loaded, _ = load_clickhouse(ClickHouseTable(target, user="pulsar", password=password),
                                    city_id=1)
    seconds = time.perf_counter() - t0
    digest = int(pd.util.hash_pandas_object(loaded.snapshots, index=False).sum())
    return {"kind": kind, "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows_read": loaded.rejected.rows_read, "counts": loaded.rejected.counts,
            "snapshots": len(loaded.snapshots), "hash": digest}


def _run(kind: str, target: str, password: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, __file__, "--measure", kind, target, password],
                         check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hexagons", type=int, default=4000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0

    import psutil

    from pulsar_core.data.synthetic import generate_kandoo_csv
    from tests.support.clickhouse import (
        READER_PASSWORD,
        SKIP_REASON,
        clickhouse_binary,
        read_export,
        running_clickhouse,
    )

    if clickhouse_binary() is None:
        print(f"skipped: {SKIP_REASON}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "kandoo.csv"
        generate_kandoo_csv(export, n_hexagons=args.hexagons, service_types=(1, 2, 3),
                            days=args.days, seed=3)
        size_mb = export.stat().st_size / 1e6
        with running_clickhouse(Path(tmp) / "clickhouse") as server:
            server.create_kandoo_table()
            t0 = time.perf_counter()
            server.insert_frame(read_export(export))
            insert_s = time.perf_counter() - t0
            csv = _run("csv", str(export), READER_PASSWORD)
            house = _run("clickhouse", server.url, READER_PASSWORD)
            assert server.process is not None
            server_rss = psutil.Process(server.process.pid).memory_info().rss / 2**20
    same = all(csv[k] == house[k] for k in ("rows_read", "counts", "snapshots", "hash"))
    print(f"{args.hexagons} hexagons x 3 service types x {args.days} days: "
          f"{csv['rows_read']:,} raw records, CSV {size_mb:.0f} MB "
          f"(inserted into ClickHouse in {insert_s:.1f} s)")
    print(f"{'source':<11} {'seconds':>8} {'peak RSS MB':>12} {'snapshots':>10} rejected")
    for row in (csv, house):
        print(f"{row['kind']:<11} {row['seconds']:>8.2f} {row['peak_rss_mb']:>12.0f} "
              f"{row['snapshots']:>10,} {row['counts']}")
    print(f"identical rows read, rejections and snapshots (content hash): {same}")
    print(f"clickhouse / csv wall time: {float(house['seconds']) / float(csv['seconds']):.2f}; "
          f"peak RSS ratio {float(house['peak_rss_mb']) / float(csv['peak_rss_mb']):.2f}; "
          f"ClickHouse server RSS {server_rss:.0f} MB")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
