"""JSON log lines (one object per line) for the operator process."""

from __future__ import annotations

import json
import logging
import re

from pulsar_core import redact

# kopf logs one INFO line per watch event for every event handler; at 1,000 models that is most
# of the log and says nothing (the reconcile handlers' lines stay).
_EVENT_HANDLER_DONE = re.compile(r"^Handler '\w+_event' succeeded\.$")


class QuietEventHandlers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.name.startswith("kopf")
                    and _EVENT_HANDLER_DONE.match(record.getMessage()))


# structured fields a log call may pass (`extra={"namespace": ..., "model": ..., "reason": ...}`;
# `name` is taken: it is the logger's)
FIELDS = ("namespace", "model", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry |= {field: str(value) for field in FIELDS
                  if (value := getattr(record, field, None)) is not None}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(fmt: str, verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(QuietEventHandlers())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    redact.install()  # URI passwords (MLflow, NATS) never reach a log line
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
