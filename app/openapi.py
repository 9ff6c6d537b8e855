"""Print the gateway's OpenAPI document (`make openapi` writes it to openapi/openapi.json)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from app.main import create_app
from app.settings import Settings


def openapi_document() -> dict[str, Any]:
    # The schema does not depend on configuration; a throwaway shop satisfies the factory.
    settings = Settings(
        _env_file=None,
        neuroon_shop_id="shop_openapi",
        neuroon_api_key=f"sk_{secrets.token_hex(16)}",
        redis_url="redis://127.0.0.1:6379/0",
    )
    return create_app(settings).openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
