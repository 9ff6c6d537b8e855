"""Admin bearer tokens verified against a JWKS URL (RS256 and ES256), served over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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


def jwks(kids: frozenset[str] = frozenset({"rsa-1", "ec-1"})) -> bytes:
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
    return json.dumps({"keys": [k for k in (rsa_jwk, ec_jwk) if k["kid"] in kids]}).encode()


@dataclass
class JwksServer:
    """What the JWKS URL serves (``kids``), how slowly (``delay``), and what it has seen."""

    url: str = ""
    kids: frozenset[str] = frozenset({"rsa-1", "ec-1"})
    delay: float = 0.0
    fetches: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(served: JwksServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with served.lock:
                served.fetches += 1
                served.in_flight += 1
                served.most_in_flight = max(served.most_in_flight, served.in_flight)
            try:
                time.sleep(served.delay)
                body = jwks(served.kids)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the gateway gave up on a slow answer
            finally:
                with served.lock:
                    served.in_flight -= 1

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    served = JwksServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


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


def _admin_status(client: TestClient, bearer: str) -> int:
    return client.get("/v1/admin/dead-letters", headers={"Authorization": f"Bearer {bearer}"}).status_code


def _wait_for(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.05)


def test_a_key_removed_from_the_jwks_stops_working(
    make_settings: SettingsFactory, jwks_server: JwksServer
) -> None:
    """Issue 10 item 7: keys used to be cached by kid for ever."""
    settings = make_settings(
        gateway_admin_jwks_url=jwks_server.url, gateway_admin_jwks_cache_seconds=1, gateway_run_worker=False
    )
    rsa_token = token(RSA_KEY, "RS256", "rsa-1")
    with TestClient(create_app(settings)) as client:
        assert _admin_status(client, rsa_token) == 200
        jwks_server.kids = frozenset({"ec-1"})  # rsa-1 withdrawn (leaked, say)
        _wait_for(lambda: _admin_status(client, rsa_token) == 401, "the removed key to be refused")
        assert _admin_status(client, token(EC_KEY, "ES256", "ec-1")) == 200
        jwks_server.kids = frozenset({"rsa-1", "ec-1"})  # and a key added is picked up
        _wait_for(lambda: _admin_status(client, rsa_token) == 200, "the key to be accepted again")


def test_made_up_key_ids_cost_one_fetch_per_interval(
    make_settings: SettingsFactory, jwks_server: JwksServer
) -> None:
    settings = make_settings(
        gateway_admin_jwks_url=jwks_server.url, gateway_admin_jwks_cache_seconds=300, gateway_run_worker=False
    )
    with TestClient(create_app(settings)) as client:
        assert _admin_status(client, token(RSA_KEY, "RS256", "rsa-1")) == 200
        fetched = jwks_server.fetches
        for i in range(30):
            assert _admin_status(client, token(RSA_KEY, "RS256", f"made-up-{i}")) == 401
        assert jwks_server.fetches - fetched <= 1  # negative caching: not one fetch per token


def test_a_slow_jwks_never_queues_admin_requests(
    make_settings: SettingsFactory, jwks_server: JwksServer
) -> None:
    """A JWKS that takes 20 s to answer: admin requests used to queue one fetch behind another (the
    last waited 60 s). Now requests with a cached key answer at once, the others get a quick 503, and
    the JWKS sees one fetch at a time."""
    settings = make_settings(
        gateway_admin_jwks_url=jwks_server.url, gateway_admin_jwks_cache_seconds=1, gateway_run_worker=False
    )
    rsa_token = token(RSA_KEY, "RS256", "rsa-1")
    with TestClient(create_app(settings)) as client:
        assert _admin_status(client, rsa_token) == 200
        jwks_server.delay = 20.0
        time.sleep(1.1)  # the cached set is due for a refresh, which will hang

        def timed(bearer: str) -> tuple[int, float]:
            started = time.monotonic()
            status = _admin_status(client, bearer)
            return status, time.monotonic() - started

        with ThreadPoolExecutor(max_workers=10) as pool:
            known = list(pool.map(timed, [rsa_token] * 20))
            unknown = list(pool.map(timed, [token(RSA_KEY, "RS256", "rotated-2")] * 10))
        assert {status for status, _ in known} == {200}
        assert max(seconds for _, seconds in known) < 1.5  # vs. 20 s behind the hung fetch
        assert {status for status, _ in unknown} == {503}  # no fresh set to say the kid is unknown
        assert max(seconds for _, seconds in unknown) < 5  # the bounded wait, not the 20 s fetch
        assert jwks_server.most_in_flight == 1


def test_an_unreachable_jwks_answers_503_quickly(
    make_settings: SettingsFactory, jwks_server: JwksServer
) -> None:
    jwks_server.delay = 20.0
    settings = make_settings(gateway_admin_jwks_url=jwks_server.url, gateway_run_worker=False)
    with TestClient(create_app(settings)) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(lambda _: _admin_status(client, token(RSA_KEY, "RS256", "rsa-1")), range(8))
            )
        assert statuses == [503] * 8
        assert time.monotonic() - started < 8  # all together; one after another behind 20 s fetches before
        assert jwks_server.most_in_flight == 1
