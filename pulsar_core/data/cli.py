"""`pulsar data generate | validate | convert`: synthetic data, input checks, export conversion.

Exit codes (docs/exit-codes.md): 0 ok, 1 rows rejected (validate), 2 bad input or arguments,
3 a data source unreachable, 4 an internal error (a bug: one line, `--verbose` for the trace).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pulsar_core.data.errors import DataContractError, DataUnavailable
from pulsar_core.data.loading import load_snapshots
from pulsar_core.data.synthetic import generate_kandoo_csv, generate_snapshots


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulsar data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks of errors")
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
        cmd.add_argument("--input-timezone", default=None, metavar="ZONE",
                         help="zone of timestamps written without one (UTC or an IANA zone); "
                         "unset: a kandoo export's are UTC, a snapshot file's are rejected")
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
        frame = generate_kandoo_csv(args.output, **options)
        print(f"wrote a kandoo export of {len(frame):,} snapshots to {args.output}")
    else:
        frame = generate_snapshots(**options)
        frame.to_parquet(args.output, index=False)
        print(f"wrote {len(frame):,} snapshots to {args.output}")
    return 0


EXIT_REJECTED, EXIT_USER, EXIT_UNAVAILABLE, EXIT_INTERNAL = 1, 2, 3, 4


def main(argv: list[str]) -> int:
    """Entry point of `pulsar data`; returns the exit status (see the module docstring)."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (DataContractError, ValueError, OSError) as err:
        code, message = EXIT_USER, str(err)
    except DataUnavailable as err:
        code, message = EXIT_UNAVAILABLE, str(err)
    except Exception as err:  # a bug: one line, never a traceback unless asked
        if args.verbose:
            logging.getLogger(__name__).exception("pulsar data %s failed", args.command)
        code, message = EXIT_INTERNAL, f"internal error: {type(err).__name__}: {err}" + (
            "" if args.verbose else " (rerun with --verbose)")
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"pulsar data {args.command}: {first}", file=sys.stderr)
    return code


def _run(args: argparse.Namespace) -> int:
    if args.command == "generate":
        return _generate(args)
    result = load_snapshots(args.inputs, data_format=args.data_format,
                            rejected_dir=args.rejected_dir, input_timezone=args.input_timezone)
    print(result.rejected.summary())
    if args.command == "convert":
        args.output.parent.mkdir(parents=True, exist_ok=True)
        result.snapshots.to_parquet(args.output, index=False)
        print(f"wrote {len(result.snapshots):,} snapshots to {args.output}")
        return 0
    return EXIT_REJECTED if result.rejected.rejected else 0
