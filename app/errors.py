"""One error vocabulary, one JSON shape: {"error": "<stable_code>", "detail": "<human message>"}."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """An error with a stable code that the API reports as-is."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": code, "detail": detail})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def internal_error_response(exc: BaseException) -> Response:
    """The answer to a bug: logged with its traceback, reported without any detail."""
    log.exception("unhandled_error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _field_errors(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code
        return error_response(exc.status_code, code, detail, dict(exc.headers or {}))

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        # FastAPI answers 422 by default; our contract says malformed input is a 400.
        assert isinstance(exc, RequestValidationError)
        return error_response(400, "invalid_request", _field_errors(exc))

    async def on_redis_error(_: Request, exc: Exception) -> Response:
        # Routes without a deadline of their own (the admin APIs) are bounded by the Redis client's
        # socket timeout; what they meet is Redis's trouble, not a bug of ours: 503, not 500.
        log.warning("redis_unavailable", extra={"error": type(exc).__name__})
        return error_response(503, "unavailable", "Redis is unavailable; retry later")

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        return internal_error_response(exc)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(RedisError, on_redis_error)
    app.add_exception_handler(Exception, on_unexpected)


class ErrorBody(BaseModel):
    """Every error the gateway answers: a stable code and a message for humans."""

    error: str
    detail: str


def document_api(app: FastAPI, extra_paths: dict[str, Any], extra_schemas: dict[str, Any]) -> None:
    """Make the OpenAPI document tell the truth.

    FastAPI documents a 422 with its own body for validation errors; we answer 400 with ours.
    Every 4xx/5xx response of ours is documented with the one error shape. Endpoints served
    ahead of the router (the widget token) bring their own entries.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            schemas["ErrorBody"] = ErrorBody.model_json_schema()
            schemas.update(extra_schemas)
            schema["paths"] = dict(sorted((schema.get("paths", {}) | extra_paths).items()))
            body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    if "422" in responses:
                        responses.pop("422")
                        responses.setdefault("400", {"description": "invalid_request"})
                    for status, response in responses.items():
                        if status[0] in "45":
                            response["content"] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
