"""`pulsar train` and the trainer image's entrypoint: settings from flags and PULSAR_* env.

Exit codes (docs/exit-codes.md): 0 registered (or reused; rejected rows are reported, not a
failure), 2 bad settings or data, 3 MLflow or a data source unreachable, 4 anything unexpected
(one line; `--verbose` shows the traceback). Never a traceback otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from pulsar_core.nats_auth import nats_auth
from pulsar_core.redact import install as install_redaction
from pulsar_core.redact import redact
from pulsar_trainer.settings_cli import (
    add_settings_flags,
    describe_error,
    env_contract_markdown,
    settings_from,
)

EXIT_USER, EXIT_UNAVAILABLE, EXIT_INTERNAL = 2, 3, 4
# Kubernetes mounts this file in every container; the kubelet reports what it holds (at most
# 4 KiB) as the container's state.terminated.message, which the operator quotes in status.
TERMINATION_LOG, TERMINATION_LIMIT = "/dev/termination-log", 4096


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulsar train",
        description="Train one surge model, register it in MLflow, publish the event.",
    )
    parser.add_argument("--env-contract", action="store_true",
                        help="print the PULSAR_* env contract (Markdown) and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs, tracebacks")
    add_settings_flags(parser)
    return parser


class _Progress:
    """Progress lines on stderr, stamped with the time since start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {redact(message)}", file=sys.stderr,
              flush=True)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    install_redaction()
    # MLflow writes its run links to stdout itself, credentials of the URI included; the
    # report prints the version's link, redacted.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if not verbose:
        import mlflow  # noqa: F401  (its import configures its loggers; quiet them afterwards)

        # MLflow's INFO chatter (database migrations, example validation): not progress.
        logging.getLogger("mlflow").setLevel(logging.WARNING)


def write_termination_message(message: str) -> None:
    """`message` (one line, redacted, at most 4 KiB) into the termination message file:
    PULSAR_TERMINATION_MESSAGE_PATH, else /dev/termination-log where it exists (in a pod).
    Best effort: a file that cannot be written never changes the exit code."""
    path = os.environ.get("PULSAR_TERMINATION_MESSAGE_PATH") or (
        TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else "")
    if not path:
        return
    line = " ".join(redact(message).split())
    try:
        with open(path, "wb") as file:
            file.write(line.encode()[:TERMINATION_LIMIT])
    except OSError as error:
        logging.getLogger(__name__).debug("termination message not written: %s", error)


def _fail(code: int, message: str) -> int:
    print(f"pulsar train: {redact(message)}", file=sys.stderr)
    write_termination_message(message)
    return code


def error_code(error: Exception) -> int:
    from pydantic import ValidationError

    from pulsar_core.data.errors import DataContractError, DataUnavailable
    from pulsar_core.registry import RegistryUnavailable
    from pulsar_trainer.tracking import MlflowUnavailable

    if isinstance(error, MlflowUnavailable | RegistryUnavailable | DataUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(error, ValidationError | DataContractError | FileNotFoundError | ValueError):
        return EXIT_USER
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.env_contract:
        print(env_contract_markdown())
        return 0
    configure_logging(args.verbose)
    try:
        from pulsar_trainer.pipeline import run_training
        from pulsar_trainer.report import render

        settings = settings_from(args)
        if settings.nats_url:
            nats_auth()  # unusable NATS credentials fail now (exit 2), not after training
        outcome = run_training(settings, progress=_Progress())
    except Exception as error:
        code = error_code(error)
        if code == EXIT_INTERNAL and args.verbose:
            logging.exception("pulsar train failed")
        hint = "" if code != EXIT_INTERNAL or args.verbose else " (rerun with --verbose)"
        first_line = describe_error(error).strip().splitlines()[0] if str(error) else ""
        return _fail(code, f"{type(error).__name__}: {first_line}{hint}"
                     if code == EXIT_INTERNAL else first_line)
    print(redact(render(settings, outcome)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
