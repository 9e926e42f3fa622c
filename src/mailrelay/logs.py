"""Logging set-up shared by the serve process and its children (delivery workers, HTTP API):
one format, to stderr.

`text` is the classic one line per record. `json` writes one JSON object per line: time (RFC
3339, UTC, milliseconds), level, logger, message, pid, the structured fields a log call passes
as `extra=` (FIELDS: queue id, account, event, ...) and a traceback as one `exc` string.

Security: log calls never pass a password, API key, AUTH payload or session token, in either
format; the JSON formatter copies only the FIELDS named below from a record, never the rest of
its attributes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from types import TracebackType
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# The `extra=` fields a JSON line carries when a log call sets them; nothing else from a record
# is copied, so an unexpected attribute can never carry something into the output.
FIELDS = ("queue_id", "account", "event", "status", "recipient", "relay", "client_ip", "user", "via")


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in strings are escaped by json)."""

    def format(self, record: logging.LogRecord) -> str:
        secs = int(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        millis = min(999, int((record.created - secs) * 1000))
        out: dict[str, Any] = {
            "time": f"{stamp}.{millis:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def json_logging() -> bool:
    """True once setup_logging chose "json": then a failure is a JSON line too, not free text."""
    return any(isinstance(h.formatter, JSONFormatter) for h in logging.getLogger().handlers)


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("mailrelay").critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))


def _first_error_only(record: logging.LogRecord) -> bool:
    """Drops psycopg's "error ignored terminating/in rollback ..." warnings: a clean-up that
    failed after the error the caller got and handled (a database outage is one line of
    store.health), one more line per connection in use when the database went away."""
    return not str(record.msg).startswith("error ignored")


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log at `level` to stderr in `fmt` ("text" or "json"); the same in every process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    if fmt == "json":
        # Python's warnings would print free text on the same stream; as records they are lines too.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
    # alembic narrates every migration step at INFO; we log what matters ourselves.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    psycopg = logging.getLogger("psycopg")
    if _first_error_only not in psycopg.filters:
        psycopg.addFilter(_first_error_only)
