"""`pulsar data generate | validate | convert`: synthetic data, input checks, export conversion."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pulsar_core.data.errors import DataContractError
from pulsar_core.data.loading import load_snapshots
from pulsar_core.data.synthetic import generate_kandoo_csv, generate_snapshots


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulsar data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write synthetic snapshots (.parquet) or a kandoo CSV")
    gen.add_argument("output", type=Path, help="*.parquet -> snapshots, *.csv -> raw export")
    gen.add_argument("--hexagons", type=int, default=300)
    gen.add_argument("--service-types", default="1,2,3", help="comma-separated ids")
    gen.add_argument("--days", type=int, default=4)
    gen.add_argument("--start", default="2025-11-19")
    gen.add_argument("--mode", choices=("runs", "continuous"), default="runs")
    gen.add_argument("--center", default="35.6892,51.3890", help="lat,lng of the city centre")
    gen.add_argument("--mixed-resolution", action="store_true")
    gen.add_argument("--seed", type=int, default=7)
    for name, help_ in (("validate", "load and validate inputs, report rejections"),
                        ("convert", "kandoo CSV export(s) -> snapshot Parquet")):
        cmd = sub.add_parser(name, help=help_)
        cmd.add_argument("inputs", nargs="+", help="files, directories, globs or URIs")
        cmd.add_argument("--data-format", default="auto",
                         choices=("auto", "kandoo-csv", "snapshot-parquet"))
        cmd.add_argument("--rejected-dir", type=Path, default=Path(".pulsar/rejected"),
                         help="where rejected.parquet is written")
        if name == "convert":
            cmd.add_argument("--output", "-o", type=Path, required=True)
    return parser


def _generate(args: argparse.Namespace) -> int:
    lat, lng = (float(v) for v in args.center.split(","))
    options = dict(center=(lat, lng), n_hexagons=args.hexagons, days=args.days,
                   service_types=[int(s) for s in args.service_types.split(",")],
                   start=args.start, mode=args.mode, mixed_resolution=args.mixed_resolution,
                   seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.output.suffix == ".csv":
        frame = generate_kandoo_csv(args.output, **options)  # type: ignore[arg-type]
        print(f"wrote a kandoo export of {len(frame):,} snapshots to {args.output}")
    else:
        frame = generate_snapshots(**options)  # type: ignore[arg-type]
        frame.to_parquet(args.output, index=False)
        print(f"wrote {len(frame):,} snapshots to {args.output}")
    return 0


def main(argv: list[str]) -> int:
    """Entry point of `pulsar data`; returns the exit status (1 when rows were rejected)."""
    args = _parser().parse_args(argv)
    if args.command == "generate":
        return _generate(args)
    try:
        result = load_snapshots(args.inputs, data_format=args.data_format,
                                rejected_dir=args.rejected_dir)
    except DataContractError as err:
        print(f"pulsar data {args.command}: {err}", file=sys.stderr)
        return 2
    print(result.rejected.summary())
    if args.command == "convert":
        args.output.parent.mkdir(parents=True, exist_ok=True)
        result.snapshots.to_parquet(args.output, index=False)
        print(f"wrote {len(result.snapshots):,} snapshots to {args.output}")
        return 0
    return 1 if result.rejected.rejected else 0
