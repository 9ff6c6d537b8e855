"""Admin bearer tokens verified against a JWKS URL (RS256 and ES256), served over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.embedded_redis import free_port
from app.main import create_app
from app.settings import ConfigError
from tests.conftest import SettingsFactory

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> bytes:
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(RSA_KEY.public_key())) | {
        "kid": "rsa-1",
        "use": "sig",
        "alg": "RS256",
    }
    ec_jwk = json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key())) | {
        "kid": "ec-1",
        "use": "sig",
        "alg": "ES256",
    }
    return json.dumps({"keys": [rsa_jwk, ec_jwk]}).encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = jwks()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def token(key: Any, algorithm: str, kid: str, **claims: Any) -> str:
    payload = {"sub": "ops", "aud": "neuroon-gateway", "exp": int(time.time()) + 300} | claims
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def test_jwks_tokens(make_settings: SettingsFactory, jwks_url: str) -> None:
    settings = make_settings(gateway_admin_jwks_url=jwks_url, gateway_run_worker=False)
    with TestClient(create_app(settings)) as client:

        def status(bearer: str) -> int:
            return client.get(
                "/v1/admin/dead-letters", headers={"Authorization": f"Bearer {bearer}"}
            ).status_code

        assert status(token(RSA_KEY, "RS256", "rsa-1")) == 200
        assert status(token(EC_KEY, "ES256", "ec-1")) == 200
        assert status(token(OTHER_RSA_KEY, "RS256", "rsa-1")) == 401  # signed by a key not in the set
        assert status(token(RSA_KEY, "RS256", "rsa-1", aud="other")) == 401
        assert status(token(RSA_KEY, "RS256", "rsa-1", exp=int(time.time()) - 600)) == 401
        assert status(token(RSA_KEY, "RS256", "unknown-kid")) == 401
        # Algorithm confusion: an HS256 token whose "secret" is the published public key (PyJWT
        # refuses to make one, so it is made by hand).
        public_pem = RSA_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

        def part(value: dict[str, Any]) -> bytes:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

        signing_input = (
            part({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
            + b"."
            + part({"aud": "neuroon-gateway", "exp": int(time.time()) + 60})
        )
        mac = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input, hashlib.sha256).digest()).rstrip(
            b"="
        )
        forged = (signing_input + b"." + mac).decode()
        assert status(forged) == 401


def test_unreachable_jwks_is_503_not_a_pass(make_settings: SettingsFactory) -> None:
    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    with TestClient(
        create_app(make_settings(gateway_admin_jwks_url=url, gateway_run_worker=False))
    ) as client:
        response = client.get(
            "/v1/admin/dead-letters", headers={"Authorization": f"Bearer {token(RSA_KEY, 'RS256', 'rsa-1')}"}
        )
        assert response.status_code == 503
        assert response.json()["error"] == "auth_unavailable"


def test_short_hs256_secret_is_a_config_error(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_JWT_SECRET must be at least 32 bytes"):
        create_app(make_settings(gateway_admin_jwt_secret="too-short"))
