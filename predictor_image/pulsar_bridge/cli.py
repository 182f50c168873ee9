"""`pulsar bridge`: keep pulsar.signals.<city>.<service> fed from ClickHouse (or a raw subject).

Flags mirror BridgeSettings (PULSAR_* variables; the ClickHouse credentials are environment
only). Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad settings or table (the message names the
field or column), 3 NATS unreachable or ClickHouse credentials refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from pydantic import ValidationError

from pulsar_bridge.runtime import NatsUnavailable, run
from pulsar_core.data.errors import AccessDenied, DataContractError
from pulsar_core.nats_auth import NatsAuthError, nats_auth
from pulsar_core.redact import install as install_redaction
from pulsar_core.redact import redact
from pulsar_core.settings import BridgeSettings
from pulsar_core.settings_flags import add_settings_flags, describe_error, settings_from

PROG = "pulsar bridge"
STOP_GRACE_SECONDS = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    add_settings_flags(parser, BridgeSettings)
    return parser


async def _main(settings: BridgeSettings) -> None:
    """Run until SIGTERM/SIGINT: the bridge stops gracefully; one still starting (NATS or
    ClickHouse slow to answer) is cancelled after STOP_GRACE_SECONDS, a second signal at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.create_task(run(settings, stop))

    def terminate() -> None:
        if stop.is_set():
            main.cancel()
        stop.set()
        loop.call_later(STOP_GRACE_SECONDS, main.cancel)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate)
    with contextlib.suppress(asyncio.CancelledError):
        await main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = settings_from(BridgeSettings, args)
    except ValidationError as error:
        print(f"{PROG}: {describe_error(BridgeSettings, error)}", file=sys.stderr)
        return 2
    try:
        nats_auth()
    except NatsAuthError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    password = settings.clickhouse_password
    secrets = [password.get_secret_value() if password else None]
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction(secrets)  # after basicConfig: it filters the root logger's handlers
    try:
        asyncio.run(_main(settings))
    except DataContractError as error:
        print(f"{PROG}: {redact(str(error), secrets)}", file=sys.stderr)
        return 2
    except (AccessDenied, NatsUnavailable) as error:
        print(f"{PROG}: {redact(str(error), secrets)}", file=sys.stderr)
        return 3
    return 0
