"""Bearer JWTs for the admin API, verified with PyJWT.

Either an HS256 secret (``GATEWAY_ADMIN_JWT_SECRET``) or the RS256/ES256 keys of a JWKS URL
(``GATEWAY_ADMIN_JWKS_URL``, cached by app/jwks.py). Every token must carry the audience
``neuroon-gateway`` and an expiry. Without either setting the admin API is disabled.
"""

from __future__ import annotations

from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from pydantic import SecretStr

from app.deps import StateDep
from app.errors import GatewayError
from app.jwks import JwksKeys, JwksUnavailable, UnknownKey
from app.settings import ConfigError

AUDIENCE = "neuroon-gateway"
JWKS_ALGORITHMS = ["RS256", "ES256"]
# Small clock differences between the token issuer and us.
LEEWAY_SECONDS = 30


class AdminAuth:
    def __init__(self, secret: SecretStr | None, jwks_url: str | None, jwks_ttl: float = 300.0) -> None:
        self._secret = secret
        self._jwks = JwksKeys(jwks_url, jwks_ttl) if jwks_url else None

    def __repr__(self) -> str:
        return f"AdminAuth(hs256={self._secret is not None}, jwks={self._jwks is not None})"

    def start(self) -> None:
        """In the lifespan: begin fetching the JWKS, if there is one."""
        if self._jwks is not None:
            self._jwks.start()

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.aclose()

    async def _jwks_key(self, token: str) -> Any:
        assert self._jwks is not None
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthorized("invalid token: no key id (kid) in its header")
        try:
            return (await self._jwks.key(kid)).key
        except UnknownKey:
            raise _unauthorized("invalid token: its key id is not in the JWKS") from None

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or GatewayError 401 (503 when the key set cannot be fetched)."""
        try:
            if self._jwks is not None:
                key: Any = await self._jwks_key(token)
                algorithms = JWKS_ALGORITHMS
            else:
                assert self._secret is not None
                key, algorithms = self._secret.get_secret_value(), ["HS256"]
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=AUDIENCE,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "aud"]},
            )
        except JwksUnavailable:
            raise GatewayError(503, "auth_unavailable", "the JWKS URL cannot be reached") from None
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        return claims


def _unauthorized(detail: str) -> GatewayError:
    return GatewayError(
        401, "unauthorized", detail, headers={"www-authenticate": 'Bearer realm="neuroon-gateway"'}
    )


MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


def build_admin_auth(
    secret: SecretStr | None, jwks_url: str | None, jwks_ttl: float = 300.0
) -> AdminAuth | None:
    if secret is None and jwks_url is None:
        return None
    if secret is not None and jwks_url is not None:
        raise ConfigError("set GATEWAY_ADMIN_JWT_SECRET or GATEWAY_ADMIN_JWKS_URL, not both")
    if secret is not None and len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"GATEWAY_ADMIN_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    return AdminAuth(secret, jwks_url, jwks_ttl)


async def require_admin(request: Request, state: StateDep) -> dict[str, Any]:
    if state.admin_auth is None:
        raise GatewayError(
            404,
            "admin_disabled",
            "the admin API is disabled: set GATEWAY_ADMIN_JWT_SECRET or GATEWAY_ADMIN_JWKS_URL",
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("a bearer token is required")
    return await state.admin_auth.verify(token.strip())


AdminDep = Annotated[dict[str, Any], Depends(require_admin)]
