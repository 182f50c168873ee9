"""`pulsar serve`: run the predictor under uvicorn. Flags mirror ServeSettings; PULSAR_* env
variables are the defaults (a flag wins over its variable)."""

from __future__ import annotations

import argparse
import logging
import sys
import types
from typing import Any, Union, get_args, get_origin

from pydantic import ValidationError

from pulsar_core.nats_auth import NatsAuthError, nats_auth
from pulsar_core.redact import install as install_redaction
from pulsar_core.settings import ServeSettings

DRAIN_SECONDS = 20.0


def _scalar_type(annotation: Any) -> type:
    """int | None -> int; the type argparse should convert a flag's text to."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation if annotation in (int, float) else str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulsar serve", description="Serve a registered surge model over HTTP (/v1, /docs).")
    for name, field in ServeSettings.model_fields.items():
        env = f"PULSAR_{name.upper()}"
        help_ = f"{field.description or name} (env {env}; default {field.default!r})"
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                            type=_scalar_type(field.annotation), help=help_)
    parser.add_argument("--drain-seconds", type=float, default=DRAIN_SECONDS,
                        help="On SIGTERM, let in-flight requests finish for this long.")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    return parser


def settings_from(args: argparse.Namespace) -> ServeSettings:
    """Flags given on the command line over PULSAR_* variables over defaults."""
    given = {name: getattr(args, name) for name in ServeSettings.model_fields
             if getattr(args, name) is not None}
    return ServeSettings(**given)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = settings_from(args)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(map(str, problem["loc"]))
            print(f"pulsar serve: --{field.replace('_', '-')} (PULSAR_{field.upper()}): "
                  f"{problem['msg']}", file=sys.stderr)
        return 2
    try:
        nats_auth()
    except NatsAuthError as error:
        print(f"pulsar serve: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction([settings.auth_token])
    import uvicorn

    from pulsar_predictor.app import create_app
    from pulsar_predictor.http_limits import uvicorn_config

    config = uvicorn_config(settings, create_app(settings), log_level=args.log_level,
                            drain_seconds=args.drain_seconds)
    print(f"pulsar serve: {settings.registered_model} on http://{settings.host}:{settings.port}"
          " (docs at /docs)")
    uvicorn.Server(config).run()
    return 0
