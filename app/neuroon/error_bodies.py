"""Reading Neuroon's error answers, whatever shape they come in (neuroon-api.md §7.1).

Shapes seen in the docs: the standard envelope ``{timestamp,status,error,message,path}`` (current),
Spring's default without ``message``, the 429 body ``{error:"rate_limit_exceeded",message,retryAfter,…}``,
``{code,message,details[]}`` (server-to-server page, 400) and the legacy
``{error:{code,message,retryAfter}}``.
We look for ``message``, then ``error``, then ``code``, as the reference advises.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

_MAX_MESSAGE = 500  # an HTML error page from a proxy must not become a 50 kB exception message


@dataclass(frozen=True, slots=True)
class ErrorBody:
    message: str
    details: list[str] = field(default_factory=list)
    retry_after: float | None = None  # from a 429 body's retryAfter


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _detail(item: Any) -> str:
    if isinstance(item, dict):
        field_name = item.get("field") or item.get("externalId") or item.get("path")
        message = item.get("message") or item.get("defaultMessage") or item.get("error")
        if field_name and message:
            return f"{field_name}: {message}"
        return str(message or field_name or orjson.dumps(item).decode())
    return str(item)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if number >= 0 else None
    return None


def parse_error_body(content: bytes, reason: str) -> ErrorBody:
    """The message, field details and retryAfter of an error answer; ``reason`` when none is given."""
    try:
        data = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        text = content.decode("utf-8", "replace").strip()
        return ErrorBody(text[:_MAX_MESSAGE] if text and not text.startswith("<") else reason)
    if not isinstance(data, dict):
        return ErrorBody(reason)
    nested = data.get("error")
    if isinstance(nested, dict):  # legacy G0 shape
        data = {**data, **nested, "error": nested.get("code")}
    message = _text(data.get("message")) or _text(data.get("error")) or _text(data.get("code")) or reason
    raw_details = data.get("details") or data.get("errors") or []
    details = [_detail(d) for d in raw_details] if isinstance(raw_details, list) else [str(raw_details)]
    if not details and data.get("status") == 400 and isinstance(data.get("message"), str):
        # The standard envelope has no details list: on 400 its message is the field errors joined
        # with ", " (neuroon-api.md §7.1), so that is where the field details are.
        details = [part for part in data["message"].split(", ") if part]
    return ErrorBody(message[:_MAX_MESSAGE], details, _number(data.get("retryAfter")))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds (what Neuroon sends) or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
