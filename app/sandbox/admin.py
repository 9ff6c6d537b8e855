"""The sandbox's controls over HTTP, under ``/_sandbox`` (never part of Neuroon's API): the same
switches as the ``Sandbox`` object, for demos and for tests of a sandbox in another process."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.neuroon.endpoints import Limit, Operation
from app.sandbox.control import Fault, Sandbox
from app.sandbox.wire import BodyError, json_response, parse_json

OPERATIONS = frozenset(str(op) for op in Operation)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultIn(_In):
    status: Annotated[int, Field(ge=100, le=599)]
    retryAfter: Annotated[float, Field(ge=0, le=3600)] | None = None
    body: dict[str, Any] | None = None


class FaultsIn(_In):
    operation: str
    script: list[Annotated[int, Field(ge=100, le=599)] | FaultIn]


class OutageIn(_In):
    on: bool


class LatencyIn(_In):
    seconds: Annotated[float, Field(ge=0, le=60)]


class BodyLimitIn(_In):
    bytes: Annotated[int, Field(ge=1)]


class LimitIn(_In):
    requests: Annotated[int, Field(ge=1)]
    window: Annotated[float, Field(gt=0, le=3600)]


class RateLimitsIn(_In):
    enabled: bool
    limits: dict[str, LimitIn] | None = None


def _error(status: int, code: str, detail: str) -> Response:
    return json_response({"error": code, "detail": detail}, status)


async def _parse(request: Request, model: type[_In]) -> Any:
    try:
        return model.model_validate(parse_json(await request.body()))
    except BodyError as exc:
        raise _Bad(exc.message) from None
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise _Bad(detail) from None


class _Bad(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _cross_site_refusal(request: Request) -> Response | None:
    """The controls change what every test and demo sees, and a web page the operator has open could
    otherwise POST to them: a form or a ``text/plain`` fetch needs no CORS preflight. So a POST must
    come from no browser page or from the sandbox's own origin, and a body must be
    ``application/json`` (a content type that only a preflighted request can send, and the sandbox
    grants no preflight)."""
    if request.method != "POST":
        return None
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site", "none")
    if (origin is not None and urlsplit(origin).netloc != request.headers.get("host")) or fetch_site not in (
        "same-origin",
        "none",
    ):
        return _error(403, "cross_site_refused", "the sandbox's controls take no request from another site")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and (
        content_type or request.headers.get("content-length", "0") != "0"
    ):
        return _error(415, "unsupported_media_type", "send the control's body as application/json")
    return None


def admin_routes(sandbox: Sandbox) -> list[Route]:
    def guarded(handler: Any) -> Any:
        async def run(request: Request) -> Response:
            refusal = _cross_site_refusal(request)
            if refusal is not None:
                return refusal
            try:
                response: Response = await handler(request)
            except _Bad as exc:
                return _error(400, "invalid_request", exc.detail)
            return response

        return run

    def shop_or_404(request: Request) -> Any:
        shop_id = request.path_params["shop_id"]
        if shop_id not in sandbox.shops:
            raise _NotFound
        return sandbox.shops[shop_id]

    async def state(_: Request) -> Response:
        return json_response(
            {
                "shops": sorted(sandbox.shops),
                "outage": sandbox.outage,
                "latency": sandbox.latency,
                "maxBody": sandbox.max_body,
                "rateLimits": {
                    "enabled": sandbox.rate_limits.enabled,
                    "limits": {
                        op: {"requests": lim.requests, "window": lim.window}
                        for op, lim in sandbox.rate_limits.limits.items()
                    },
                },
            }
        )

    async def faults(request: Request) -> Response:
        parsed: FaultsIn = await _parse(request, FaultsIn)
        if parsed.operation not in OPERATIONS:
            raise _Bad(f"operation: must be one of {', '.join(sorted(OPERATIONS))}")
        sandbox.script(
            parsed.operation,
            *(
                entry
                if isinstance(entry, int)
                else Fault(entry.status, retry_after=entry.retryAfter, body=entry.body)
                for entry in parsed.script
            ),
        )
        return Response(status_code=204)

    async def outage(request: Request) -> Response:
        sandbox.outage = (await _parse(request, OutageIn)).on
        return Response(status_code=204)

    async def latency(request: Request) -> Response:
        sandbox.latency = (await _parse(request, LatencyIn)).seconds
        return Response(status_code=204)

    async def body_limit(request: Request) -> Response:
        sandbox.max_body = (await _parse(request, BodyLimitIn)).bytes
        return Response(status_code=204)

    async def rate_limits(request: Request) -> Response:
        parsed: RateLimitsIn = await _parse(request, RateLimitsIn)
        limits = None
        if parsed.limits is not None:
            unknown = set(parsed.limits) - OPERATIONS
            if unknown:
                raise _Bad(f"limits: unknown operation {sorted(unknown)[0]}")
            limits = {op: Limit(v.requests, v.window) for op, v in parsed.limits.items()}
        sandbox.rate_limits.configure(parsed.enabled, limits)
        return Response(status_code=204)

    async def reset(_: Request) -> Response:
        sandbox.reset()
        return Response(status_code=204)

    async def products(request: Request) -> Response:
        try:
            shop = shop_or_404(request)
        except _NotFound:
            return _error(404, "unknown_shop", "no such sandbox shop")
        return json_response(
            {"products": list(shop.products.values()), "droppedVariants": shop.dropped_variants}
        )

    async def conversions(request: Request) -> Response:
        try:
            shop = shop_or_404(request)
        except _NotFound:
            return _error(404, "unknown_shop", "no such sandbox shop")
        return json_response({"conversions": list(shop.conversions.values()), "posts": shop.conversion_posts})

    async def requests(_: Request) -> Response:
        return json_response(
            [
                {
                    "operation": r.operation,
                    "method": r.method,
                    "path": r.path,
                    "status": r.status,
                    "shopId": r.shop_id,
                    "replayed": r.replayed,
                }
                for r in sandbox.requests
            ]
        )

    return [
        Route("/_sandbox/state", guarded(state), methods=["GET"]),
        Route("/_sandbox/faults", guarded(faults), methods=["POST"]),
        Route("/_sandbox/outage", guarded(outage), methods=["POST"]),
        Route("/_sandbox/latency", guarded(latency), methods=["POST"]),
        Route("/_sandbox/body-limit", guarded(body_limit), methods=["POST"]),
        Route("/_sandbox/rate-limits", guarded(rate_limits), methods=["POST"]),
        Route("/_sandbox/reset", guarded(reset), methods=["POST"]),
        Route("/_sandbox/requests", guarded(requests), methods=["GET"]),
        Route("/_sandbox/shops/{shop_id}/products", guarded(products), methods=["GET"]),
        Route("/_sandbox/shops/{shop_id}/conversions", guarded(conversions), methods=["GET"]),
    ]


class _NotFound(Exception):
    pass
