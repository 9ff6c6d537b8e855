"""openapi/openapi.json is exactly what the app serves: regenerate it with `make openapi`."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from app.openapi import render

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    assert COMMITTED.read_text() == render(), "openapi/openapi.json is stale: run `make openapi`"


def test_served_openapi_is_the_committed_one(client: TestClient) -> None:
    assert client.get("/openapi.json").json() == json.loads(COMMITTED.read_text())


def test_no_page_loads_script_from_a_cdn(client: TestClient) -> None:
    """FastAPI's /docs and /redoc pull Swagger UI and ReDoc from a CDN without integrity: dropped."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "cdn." not in response.text
    assert client.get("/openapi.json").status_code == 200
