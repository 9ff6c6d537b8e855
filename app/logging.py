"""Structured logs: one JSON object per event, the request id attached, secrets redacted.

Log calls name an event and pass fields through ``extra``:
``log.info("api_key_rotated", extra={"shop": shop_id})``. Every known secret value is
registered with ``redact_secrets`` at start-up and replaced wherever it would appear.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_BARE_RECORD = logging.LogRecord("", 0, "", 0, "", None, None)
_STANDARD_ATTRS = frozenset(_BARE_RECORD.__dict__) | {"message", "asctime"}
# LogRecord.__init__ sets these attributes first; logging adds a call's ``extra`` right after them.
_INIT_ATTRS = len(_BARE_RECORD.__dict__)
_secrets: set[str] = set()
REDACTED = "[redacted]"


def redact_secrets(values: Iterable[str]) -> None:
    """Register secret values that must never reach a log line, whatever logs them."""
    _secrets.update(v for v in values if len(v) >= 8)


def _redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


@functools.lru_cache(maxsize=4)
def _second(epoch_second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


def _timestamp(record: logging.LogRecord) -> str:
    return f"{_second(int(record.created))}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    # Handlers format synchronously inside the request, so the context variable is still set.
    request_id = request_id_var.get()
    if request_id:
        fields["request_id"] = request_id
    # Only what follows __init__'s attributes can be ours (one line per request: make bench).
    for key, value in itertools.islice(record.__dict__.items(), _INIT_ATTRS, None):
        if key not in _STANDARD_ATTRS and not key.startswith("_") and key != "color_message":
            fields[key] = value
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = orjson.dumps(_fields(record), default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return _redact(line)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level'):<7} {fields.pop('event')}"
        fields.pop("logger")
        exc = fields.pop("exc", None)
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        return _redact(f"{head} {tail}".rstrip() + (f"\n{exc}" if exc else ""))


def configure_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    """Route our logs and uvicorn's through one formatter on stderr."""
    # The logging HOWTO's "Optimization" knobs: we never print the caller's file, thread or
    # process, and collecting them costs more than formatting the line (one per request).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our own middleware logs each request once, with the request id; uvicorn's would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
