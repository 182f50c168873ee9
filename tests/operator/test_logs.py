"""Operator logs: no line per watch event, no whole NATS messages, no URI passwords."""

from __future__ import annotations

import logging
from typing import Any

from pulsar_operator.logs import QuietEventHandlers
from pulsar_operator.nats_link import NatsLink


def _record(name: str, message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_event_handler_successes_are_dropped_and_everything_else_kept() -> None:
    quiet = QuietEventHandlers()
    assert not quiet.filter(_record("kopf.objects", "Handler 'surgemodel_event' succeeded."))
    assert not quiet.filter(_record("kopf.objects", "Handler 'job_event' succeeded."))
    assert quiet.filter(_record("kopf.objects", "Handler 'surgemodel_reconcile' succeeded."))
    assert quiet.filter(_record("kopf.objects", "Handler 'job_event' failed.", logging.ERROR))
    assert quiet.filter(_record("pulsar_operator.reconciler", "Handler 'x_event' succeeded."))


class _Queue:
    def add_all(self, keys: Any) -> None:
        pass


class _Catalog:
    bodies: dict[str, Any] = {}  # noqa: RUF012


class _Runtime:
    nats_error: str | None = None
    queue = _Queue()
    catalog = _Catalog()


def test_nats_outage_message_is_one_short_line_without_the_password() -> None:
    runtime = _Runtime()
    link = NatsLink(runtime, "nats://pulsar:s3cret@nats.example:4222")  # type: ignore[arg-type]
    link.down("unexpected message: " + "x" * 5000)
    assert runtime.nats_error is not None
    assert "s3cret" not in runtime.nats_error and len(runtime.nats_error) < 320


def test_closing_the_session_ourselves_is_no_outage(caplog: Any) -> None:
    runtime = _Runtime()
    link = NatsLink(runtime, "nats://127.0.0.1:4222")  # type: ignore[arg-type]
    link.closing = True  # stopping or stepping down
    with caplog.at_level(logging.WARNING):
        link.down("connection lost")
    assert runtime.nats_error is None and "unavailable" not in caplog.text


def test_json_lines_carry_namespace_model_and_reason_as_fields() -> None:
    import io
    import json

    from pulsar_operator.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("pulsar_operator.test_json_fields")
    logger.addHandler(handler)
    try:
        logger.warning("pulsar/tehran-eco Promoted: version 3",
                       extra={"namespace": "pulsar", "model": "tehran-eco", "reason": "Promoted"})
        logger.warning("no fields")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["namespace"], first["model"], first["reason"]) == (
        "pulsar", "tehran-eco", "Promoted")
    assert "namespace" not in second and second["logger"] == "pulsar_operator.test_json_fields"
