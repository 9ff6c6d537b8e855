"""Structured logs: one JSON object per event, the request id attached, secrets redacted.

Log calls name an event and pass fields through ``extra``:
``log.info("api_key_rotated", extra={"shop": shop_id})``. Every known secret value is
registered with ``redact_secrets`` at start-up and replaced wherever it would appear: in every string
*before* it is serialised, so a secret holding a quote or a backslash (escaped in JSON) is found too, and
whatever its length (a 4-character Redis password is still a password).
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_BARE_RECORD = logging.LogRecord("", 0, "", 0, "", None, None)
_STANDARD_ATTRS = frozenset(_BARE_RECORD.__dict__) | {"message", "asctime"}
# LogRecord.__init__ sets these attributes first; logging adds a call's ``extra`` right after them.
_INIT_ATTRS = len(_BARE_RECORD.__dict__)
REDACTED = "[redacted]"


class _Redactor:
    """The secrets this process knows, as one regular expression (one pass per string)."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        for value in filter(None, values):
            # Also as it reads quoted in text we log: a repr in a traceback, JSON in a quoted body.
            self.secrets.update((value, repr(value)[1:-1], orjson.dumps(value).decode()[1:-1]))
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(self.secrets, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def text(self, text: str) -> str:
        return self.pattern.sub(REDACTED, text) if self.pattern is not None else text

    def value(self, value: Any) -> Any:
        """A log field with every secret replaced; what JSON cannot hold becomes its (redacted) text."""
        if self.pattern is None or value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return self.text(str(value))


_redactor = _Redactor()


def redact_secrets(values: Iterable[str]) -> None:
    """Register secret values that must never reach a log line, whatever logs them."""
    _redactor.add(values)


def url_secrets(url: str) -> list[str]:
    """A URL that may carry a password (REDIS_URL): the URL itself and its password, as written and
    percent-decoded, since an error message may quote either."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return [url] + ([password, unquote(password)] if password else [])


@functools.lru_cache(maxsize=4)
def _second(epoch_second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


def _timestamp(record: logging.LogRecord) -> str:
    return f"{_second(int(record.created))}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    redact = _redactor.value
    fields: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": redact(record.getMessage()),
    }
    # Handlers format synchronously inside the request, so the context variable is still set.
    request_id = request_id_var.get()
    if request_id:
        fields["request_id"] = request_id
    # Only what follows __init__'s attributes can be ours (one line per request: make bench).
    for key, value in itertools.islice(record.__dict__.items(), _INIT_ATTRS, None):
        if key not in _STANDARD_ATTRS and not key.startswith("_") and key != "color_message":
            fields[key] = redact(value)
    if record.exc_info:
        fields["exc"] = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        fields["stack"] = redact(record.stack_info)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Fields are redacted already; ``default=str`` only meets values the redactor left as they were.
        return orjson.dumps(_fields(record), default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level'):<7} {fields.pop('event')}"
        fields.pop("logger")
        exc = fields.pop("exc", None)
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{head} {tail}".rstrip() + (f"\n{exc}" if exc else "")


def configure_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    """Route our logs and uvicorn's through one formatter on stderr, and with them what Python itself
    would print there: warnings and uncaught exceptions (in any thread). In ``json`` every line is
    then one JSON object (interface.md §3.5): a log shipper never meets a bare traceback."""
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
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    sys.unraisablehook = _log_unraisable


def logs_as_json() -> bool:
    """Whether log lines go out as JSON (then messages meant for a person go out as log lines too)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


_crash_log = logging.getLogger("app.crash")


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    _crash_log.critical("uncaught_exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    _crash_log.error(
        "uncaught_exception_in_thread",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"thread": args.thread.name if args.thread else None},
    )


def _log_unraisable(unraisable: Any) -> None:
    exc = unraisable.exc_value
    _crash_log.warning(
        "unraisable_exception",
        exc_info=(type(exc), exc, unraisable.exc_traceback) if exc is not None else None,
        extra={"context": unraisable.err_msg or repr(unraisable.object)},
    )
