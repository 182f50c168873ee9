"""`pulsar deadletters`: list what Pulsar components set aside as invalid, newest last.

Exit codes: 0 listed (possibly none), 2 bad flag, 3 NATS unreachable (one line, the URL's
password masked).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys

from pulsar_core.dead_letters import DeadLetter, DeadLettersUnavailable, list_dead_letters

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
MAX_LIMIT = 10_000


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulsar deadletters",
        description="List the dead letters kept in the PULSAR_DEAD_LETTERS stream (messages "
                    "and rows set aside as invalid, with their reason), oldest first.")
    parser.add_argument("--nats-url", default=os.environ.get("PULSAR_NATS_URL", DEFAULT_NATS_URL),
                        help="NATS with JetStream (default: $PULSAR_NATS_URL, else "
                             f"{DEFAULT_NATS_URL})")
    parser.add_argument("--source", help="only this component's (operator, bridge, ...)")
    parser.add_argument("--limit", type=_limit, default=50,
                        help=f"the newest N (1..{MAX_LIMIT}, default 50)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON array (payload in full, base64, and as a text preview)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for NATS")
    return parser


def as_json(letter: DeadLetter) -> dict[str, object]:
    fields = letter.model_dump(mode="json", exclude={"payload"})
    return fields | {"payload_preview": letter.preview(200),
                     "payload_base64": base64.b64encode(letter.payload).decode()}


def as_table(letters: list[DeadLetter]) -> str:
    if not letters:
        return "no dead letters"
    rows = [("TIME", "SOURCE", "SUBJECT", "REASON", "PAYLOAD")]
    rows += [(letter.time.strftime("%Y-%m-%dT%H:%M:%SZ"), letter.source, letter.subject,
              letter.reason[:80], letter.preview(60)) for letter in letters]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                                row[4]]) for row in rows)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        letters = asyncio.run(list_dead_letters(args.nats_url, limit=args.limit,
                                                source=args.source, timeout=args.timeout))
    except DeadLettersUnavailable as error:
        print(f"pulsar deadletters: {error}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps([as_json(letter) for letter in letters], indent=2))
    else:
        print(as_table(letters))
    return 0
