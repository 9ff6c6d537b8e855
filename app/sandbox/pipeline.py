"""What happens to every sandboxed Neuroon request before and after its handler: body cap, latency,
outage, scripted faults, authentication, rate limiting, the record of the request, and a last-resort
500 (a sandbox bug, never a client's malformed input)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.sandbox.auth import AuthError, authenticate
from app.sandbox.control import Fault, RecordedRequest, Sandbox
from app.sandbox.state import ShopState
from app.sandbox.wire import BodyError, envelope, json_response, parse_json, rate_limit_body

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class Call:
    """One authenticated request, as handlers see it."""

    request: Request
    body: bytes
    state: ShopState | None
    replayed: bool = False

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def shop(self) -> ShopState:
        assert self.state is not None, "handler of an authenticated route"
        return self.state

    def json(self) -> Any:
        return parse_json(self.body)


Handler = Callable[[Call], Awaitable[Response]]


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"Request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _fault_response(fault: Fault, path: str) -> Response:
    headers = dict(fault.headers)
    if fault.retry_after is not None:
        headers["Retry-After"] = f"{fault.retry_after:g}"
    if fault.body is not None:
        return json_response(fault.body, fault.status, headers)
    if fault.status == 429:
        retry = fault.retry_after if fault.retry_after is not None else 60
        headers.setdefault("Retry-After", f"{retry:g}")
        return json_response(rate_limit_body(0, retry), 429, headers)
    return envelope(fault.status, "Injected fault", path, headers)


def endpoint(
    sandbox: Sandbox, operation: str, handler: Handler, *, auth: bool = True, sleep: Sleep = asyncio.sleep
) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        path = request.url.path
        state: ShopState | None = None
        call: Call | None = None
        body = b""
        try:
            body = await _read_body(request, sandbox.max_body)
            if sandbox.latency > 0:
                await sleep(sandbox.latency)
            fault = None if sandbox.outage else sandbox.next_fault(operation)
            if sandbox.outage:
                response = envelope(503, "Service unavailable (sandbox outage)", path)
            elif fault is not None:
                response = _fault_response(fault, path)
            else:
                if auth:
                    state = authenticate(sandbox, request, request.path_params.get("shop_id"))
                call = Call(request, body, state)
                response = await _limited(sandbox, operation, call, handler)
        except AuthError as exc:
            response = envelope(exc.status, exc.message, path)
        except BodyError as exc:
            response = envelope(exc.status, exc.message, path)
        except Exception:  # a sandbox bug: answer as Spring would, and say so in the log
            log.exception("sandbox_handler_failed", extra={"operation": operation})
            response = envelope(500, "Internal server error", path)
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "x-shop-api-key"}
        sandbox.requests.append(
            RecordedRequest(
                operation=operation,
                method=request.method,
                path=path,
                query=request.url.query,
                headers=headers,
                body=body,
                status=response.status_code,
                shop_id=state.shop.id if state else None,
                had_api_key="x-shop-api-key" in request.headers,
                replayed=call.replayed if call else False,
            )
        )
        return response

    return run


async def _limited(sandbox: Sandbox, operation: str, call: Call, handler: Handler) -> Response:
    """The rate-limit filter (when on): X-RateLimit-* on every limited answer, 429 when over."""
    shop_id = call.state.shop.id if call.state else "-"
    verdict = sandbox.rate_limits.hit(shop_id, operation)
    if verdict is None:
        return await handler(call)
    limit, remaining, allowed = verdict
    headers = {"X-RateLimit-Limit": str(limit.requests), "X-RateLimit-Remaining": str(remaining)}
    if not allowed:
        # Retry-After "equals the window size (60 or 300)" (neuroon-api.md §8.2).
        headers["Retry-After"] = f"{limit.window:g}"
        return json_response(rate_limit_body(limit.requests, limit.window), 429, headers)
    response = await handler(call)
    response.headers.update(headers)
    return response
