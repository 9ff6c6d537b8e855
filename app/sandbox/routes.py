"""Neuroon's Plugin API as the sandbox serves it (neuroon-api.md §4-§9). Handlers are thin: parse,
apply the rule in ``state.py``, answer in Neuroon's shapes."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from app.neuroon.signing import sign_widget_token
from app.sandbox.control import Sandbox
from app.sandbox.pipeline import Call
from app.sandbox.schemas import ConversionIn, SyncIn, VerifyIn
from app.sandbox.state import IdempotentReply, normalize_site
from app.sandbox.wire import BodyError, envelope, field_errors, json_response, validation_error

DEFAULT_PAGE = 100
MAX_PAGE = 500


def _require_json(call: Call) -> None:
    content_type = call.request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BodyError(415, "Content-Type must be application/json")


class PluginApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def _invalid(self, call: Call, exc: ValidationError) -> Response:
        return validation_error(self.sandbox.validation_error_shape, field_errors(exc), call.path)

    async def sync(self, call: Call) -> Response:
        _require_json(call)
        shop = call.shop
        idem_key = call.request.headers.get("x-idempotency-key")
        body_hash = hashlib.sha256(call.body).hexdigest()
        if idem_key:
            # Undocumented semantics (neuroon-api.md §5.4): the same key with the same body replays the
            # first answer without applying the batch again; a different body is a new request.
            previous = shop.idempotency.get(idem_key)
            if previous is not None and previous.body_hash == body_hash:
                call.replayed = True
                return json_response(previous.body, previous.status)
        try:
            batch = SyncIn.model_validate(call.json())
        except ValidationError as exc:
            return self._invalid(call, exc)
        products = [p.model_dump(mode="python", by_alias=True, exclude_none=True) for p in batch.products]
        if batch.sync_type == "FULL":
            ids = [p["externalId"] for p in products]
            if len(set(ids)) != len(ids):
                return envelope(409, "externalId already registered in full sync", call.path)
        currencies = {p["currency"] for p in products if "currency" in p}
        if len(currencies) > 1:
            return envelope(422, "Currency mismatch between items", call.path)
        result = shop.apply_sync(batch.sync_type, products)
        if idem_key:
            shop.idempotency[idem_key] = IdempotentReply(body_hash, 200, result)
        return json_response(result)

    async def get_product(self, call: Call) -> Response:
        product = call.shop.products.get(call.request.path_params["external_id"])
        if product is None:
            return envelope(404, "Product not found", call.path)
        return json_response(product)

    async def list_products(self, call: Call) -> Response:
        params = call.request.query_params
        raw_limit = params.get("limit") or params.get("size")
        try:
            limit = int(raw_limit) if raw_limit else DEFAULT_PAGE
        except ValueError:
            return envelope(400, "limit must be an integer", call.path)
        if not 1 <= limit <= MAX_PAGE:
            return envelope(400, f"limit must be between 1 and {MAX_PAGE}", call.path)
        cursor = params.get("cursor") or None
        after = None
        if cursor is not None:
            try:
                padded = cursor.replace("-", "+").replace("_", "/") + "=" * (-len(cursor) % 4)
                after = base64.b64decode(padded, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return envelope(400, "Invalid cursor", call.path)
        products, last = call.shop.page(after, limit)
        next_cursor = base64.urlsafe_b64encode(last.encode()).rstrip(b"=").decode() if last else None
        return json_response({"products": products, "nextCursor": next_cursor})

    async def delete_product(self, call: Call) -> Response:
        # "deleting twice returns 204" (server-to-server page, idempotency table).
        call.shop.products.pop(call.request.path_params["external_id"], None)
        return Response(status_code=204)

    async def verify(self, call: Call) -> Response:
        shop = call.shop
        domain = shop.shop.shop_url
        if call.body.strip():
            _require_json(call)
            try:
                parsed = VerifyIn.model_validate(call.json())
            except ValidationError as exc:
                return self._invalid(call, exc)
            domain = parsed.domain or domain
        registered = shop.shop.shop_url
        if domain is None or registered is None or normalize_site(domain) != normalize_site(registered):
            return envelope(403, "Domain does not match the shop URL registered in Neuroon", call.path)
        if shop.verified_at is not None:
            return envelope(409, "Domain already verified", call.path)
        shop.verified_at = _local_now()
        return json_response(
            {
                "shopId": shop.shop.id,
                "verificationCode": shop.verification_code,
                "domain": domain,
                "name": shop.shop.name or shop.shop.id,
            }
        )

    async def verification_data(self, call: Call) -> Response:
        shop = call.shop
        # Both documented revisions' fields (neuroon-api.md §6.2), so either reader finds its own.
        return json_response(
            {
                "verificationCode": shop.verification_code,
                "instructions": "Call POST /api/plugin/shops/{shopId}/verify with your API key.",
                "verified": shop.verified_at is not None,
                "domain": shop.shop.shop_url,
                "verifiedAt": shop.verified_at,
            }
        )

    async def unverify(self, call: Call) -> Response:
        call.shop.verified_at = None
        return Response(status_code=204)

    async def me(self, call: Call) -> Response:
        shop = call.shop
        return json_response(
            {
                "id": shop.shop.id,
                "name": shop.shop.name or shop.shop.id,
                "url": shop.shop.shop_url,
                "verified": shop.verified_at is not None,
                "plan": shop.shop.plan,
                "maxProducts": shop.shop.max_products,
                "maxSearchesPerMonth": shop.shop.max_searches_per_month,
                "productsCount": len(shop.products),
            }
        )

    async def track_conversion(self, call: Call) -> Response:
        _require_json(call)
        try:
            conversion = ConversionIn.model_validate(call.json())
        except ValidationError as exc:
            return self._invalid(call, exc)
        body: dict[str, Any] = conversion.model_dump(mode="python", by_alias=True, exclude_none=True)
        new = call.shop.record_conversion(conversion.order_id, body)
        # The answer's body is undocumented (neuroon-api.md §9.2, "200/201 OK"): 200 with a small summary.
        return json_response({"orderId": conversion.order_id, "recorded": True, "duplicate": not new})

    async def issue_widget_token(self, call: Call) -> Response:
        """G1's POST /api/shops/{shopId}/widget-token: a token of the same format, signed by Neuroon."""
        shop = call.shop.shop
        return json_response({"token": sign_widget_token(shop.id, shop.key, int(self.sandbox.wall_clock()))})


def _local_now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
