"""How the sandbox answers: Neuroon's error bodies (neuroon-api.md §7.1) and JSON with Decimal money."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

# Neuroon's request body limit is not documented (neuroon-api.md §5): 5 MiB is our assumption, a common
# servlet/proxy default. Tests lower it (Sandbox.max_body) to play a stricter Neuroon.
MAX_BODY = 5 * 1024 * 1024


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, default=_default),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _timestamp() -> str:
    # Spring's LocalDateTime.now().toString(): UTC without a zone (neuroon-api.md §7.1).
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def envelope(status: int, message: str, path: str, headers: dict[str, str] | None = None) -> Response:
    """The standard envelope of Neuroon's GlobalExceptionHandler."""
    body = {
        "timestamp": _timestamp(),
        "status": status,
        "error": _phrase(status),
        "message": message,
        "path": path,
    }
    return json_response(body, status, headers)


def spring_default(status: int, path: str) -> Response:
    """Spring's own error body (405, 415 … raised outside the handler): no ``message``."""
    return json_response(
        {"timestamp": _timestamp(), "status": status, "error": _phrase(status), "path": path}, status
    )


def rate_limit_body(limit: int, retry_after: float) -> dict[str, Any]:
    return {
        "error": "rate_limit_exceeded",
        "message": "Too many requests. Please try again later.",
        "retryAfter": int(retry_after) if float(retry_after).is_integer() else retry_after,
        "limit": limit,
        "remaining": 0,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def field_errors(exc: ValidationError) -> list[str]:
    """``products[0].name: …`` per failing field; never the rejected input."""
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ""
        for part in err["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        message = str(err["msg"]).removeprefix("Value error, ")
        out.append(f"{where or 'body'}: {message}")
    return out


def validation_error(shape: str, details: list[str], path: str) -> Response:
    """400 in the current envelope (messages joined with ", "), or the {code,message,details} shape."""
    if shape == "code":
        return json_response(
            {"code": "VALIDATION_ERROR", "message": "Validation failed", "details": details}, 400
        )
    return envelope(400, ", ".join(details), path)


class BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_json(body: bytes) -> Any:
    """The request's JSON, or BodyError(400): invalid UTF-8 and malformed JSON are the client's fault."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(400, "Request body is not valid UTF-8") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BodyError(400, "Malformed JSON request body") from None
