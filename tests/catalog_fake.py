"""A second, independent Neuroon for the catalog: a small ASGI app written straight from
neuroon-server-to-server.txt and neuroon-api.md §5-§6, sharing no code with the client or the sandbox.

It keeps every sync request as received, applies the documented semantics (INCREMENTAL upserts, FULL
wipes then inserts, orphan variants silently dropped, 1..500 products), and can leave out the two
routes the docs only show in samples (per-product read, cursor listing).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class FakeNeuroon:
    shop_id: str
    key: str
    shop_url: str
    with_read: bool = True
    with_listing: bool = True
    catalog: dict[str, dict[str, Any]] = field(default_factory=dict)
    syncs: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    verified: bool = False
    sync_delay: float = 0.0  # seconds each sync answer takes (to kill a client mid-run)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/plugin/shops/{shop}/products/sync", self.sync, methods=["POST"]),
                Route("/api/plugin/shops/{shop}/products", self.listing, methods=["GET"]),
                Route(
                    "/api/plugin/shops/{shop}/products/{eid:path}", self.product, methods=["GET", "DELETE"]
                ),
                Route("/api/plugin/shops/{shop}/verify", self.verify, methods=["POST"]),
            ]
        )

    def _auth(self, request: Request) -> Response | None:
        if request.headers.get("x-shop-api-key") != self.key:
            return JSONResponse({"status": 401, "error": "Unauthorized"}, 401)
        if request.path_params["shop"] != self.shop_id:
            return JSONResponse({"status": 403, "error": "Forbidden"}, 403)
        return None

    async def sync(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        body = json.loads(await request.body())
        if self.sync_delay:
            await asyncio.sleep(self.sync_delay)
        self.syncs.append((body, dict(request.headers)))
        products = body.get("products")
        if body.get("syncType") not in ("INCREMENTAL", "FULL") or not isinstance(products, list):
            return JSONResponse({"status": 400, "message": "syncType/products"}, 400)
        if not 1 <= len(products) <= 500:
            return JSONResponse({"status": 400, "message": "products: size must be between 1 and 500"}, 400)
        if body["syncType"] == "FULL":
            self.catalog = {}  # "it wipes the catalog in Neuroon before reinserting the batch you send"
        for p in products:
            for required in ("externalId", "name", "price", "url"):
                if required not in p:
                    return JSONResponse({"status": 400, "message": f"{required}: must not be null"}, 400)
            if len(p.get("description", "")) > 5000 or len(p["name"]) > 512:
                return JSONResponse({"status": 400, "message": "size"}, 400)
            parent = p.get("parentExternalId")
            if parent and parent not in self.catalog:
                self.dropped.append(p["externalId"])  # "Orphan variants … are silently dropped"
                continue
            self.catalog[p["externalId"]] = p
        return JSONResponse({"synced": len(products)})

    async def listing(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if not self.with_listing:
            return JSONResponse({"status": 404, "error": "Not Found"}, 404)
        ids = sorted(self.catalog)
        cursor = request.query_params.get("cursor") or ""
        after = [i for i in ids if i > cursor] if cursor else ids
        page = after[:3]  # small pages: the caller must follow nextCursor
        next_cursor = page[-1] if len(after) > 3 else None
        return JSONResponse({"products": [self.catalog[i] for i in page], "nextCursor": next_cursor})

    async def product(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        eid = unquote(request.path_params["eid"])
        if request.method == "DELETE":
            self.deletes.append(eid)
            return Response(status_code=204 if self.catalog.pop(eid, None) is not None else 404)
        if not self.with_read or eid not in self.catalog:
            return JSONResponse({"status": 404, "error": "Not Found"}, 404)
        return JSONResponse(self.catalog[eid])

    async def verify(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        body = json.loads(await request.body() or b"{}")
        site = (body.get("domain") or "").rstrip("/")
        if site != self.shop_url.rstrip("/") or request.headers.get("origin") != self.shop_url.rstrip("/"):
            return JSONResponse({"status": 403, "message": "Origin mismatch"}, 403)
        if self.verified:
            return JSONResponse({"status": 409, "error": "Conflict", "message": "already verified"}, 409)
        self.verified = True
        return JSONResponse({"shopId": self.shop_id, "verificationCode": "vc_1", "domain": site})
