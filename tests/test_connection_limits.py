"""Connection limits of `serve` (app/server.py), tried with real sockets against the real process."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import CANARY_KEY, SHOP_ID
from tests.support import GatewayProcess, run_gateway

MiB = 1024 * 1024


def serve(redis_url: str, tmp_path: Path, **limits: str) -> contextlib.AbstractContextManager[GatewayProcess]:
    """`serve` with these limits (GATEWAY_* settings)."""
    env = {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "REDIS_URL": redis_url, **limits}
    return run_gateway(["serve", "--no-worker"], env, tmp_path)


@pytest.fixture
def gateway(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[GatewayProcess]:
    limits = {"GATEWAY_HEADER_TIMEOUT": "1", "GATEWAY_KEEP_ALIVE_TIMEOUT": "1"}
    with serve(redis_url, tmp_path, **limits, GATEWAY_MAX_CONCURRENCY="20") as running:
        yield running


def connect(gateway: GatewayProcess) -> socket.socket:
    host, port = gateway.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, bool]:
    """What the server sends, and whether it closed the connection within ``within`` seconds."""
    received = b""
    until = time.monotonic() + within
    while time.monotonic() < until:
        ready, _, _ = select.select([sock], [], [], max(0.0, until - time.monotonic()))
        if not ready:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def status_and_body(response: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_headers_past_the_limit_are_refused_while_they_arrive(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * (64 * 1024))  # never ends
        response, closed = read_until_closed(sock, 5)
    assert closed
    status, body = status_and_body(response)
    assert status == 431
    assert body["error"] == "header_too_large"


def test_an_8_mib_header_is_not_served(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        request = b"GET /livez HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * (8 * MiB) + b"\r\n\r\n"
        sender = threading.Thread(target=lambda: _send_quietly(sock, request), daemon=True)
        sender.start()
        response, closed = read_until_closed(sock, 10)
        sender.join(10)
    assert closed
    # The server may reset the connection before our copy of its 431 is read; it never serves it.
    assert response == b"" or status_and_body(response)[0] == 431
    assert httpx.get(gateway.base_url + "/livez").status_code == 200


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def test_headers_that_arrive_in_one_piece_are_measured_too(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * (40 * 1024) + b"\r\n\r\n")
        response, closed = read_until_closed(sock, 5)
    assert closed
    assert status_and_body(response)[0] == 431


def test_large_but_reasonable_headers_are_served(gateway: GatewayProcess) -> None:
    cookie = "c=" + "x" * (24 * 1024)  # a cookie-heavy browser, under the 32 KiB default
    response = httpx.get(gateway.base_url + "/livez", headers={"Cookie": cookie})
    assert response.status_code == 200


def test_slow_partial_headers_are_cut_off(gateway: GatewayProcess) -> None:
    # Slowloris: many connections, each sending a header line now and then, never finishing.
    socks = [connect(gateway) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: gw\r\n")
        open_socks = set(socks)
        until = time.monotonic() + 8  # the timeout is 1 s; before the limit they stayed open for good
        while open_socks and time.monotonic() < until:
            for sock in list(open_socks):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    open_socks.discard(sock)
                    continue
                ready, _, _ = select.select([sock], [], [], 0)
                if ready and _closed_by_server(sock):
                    open_socks.discard(sock)
            time.sleep(0.2)
        assert not open_socks
        # Meanwhile and after, the gateway serves everyone else.
        assert httpx.get(gateway.base_url + "/livez").status_code == 200
    finally:
        for sock in socks:
            sock.close()


def _closed_by_server(sock: socket.socket) -> bool:
    response, closed = read_until_closed(sock, 0.5)
    assert response == b"" or status_and_body(response)[0] == 408
    return closed


def test_a_keep_alive_request_gets_its_own_header_deadline(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # One header timer per connection (app/server.py): it was armed for the first request's deadline
    # and must wait on for the second request's, not cut it off at the first one's.
    limits = {"GATEWAY_HEADER_TIMEOUT": "2", "GATEWAY_KEEP_ALIVE_TIMEOUT": "5"}
    with serve(redis_url, tmp_path, **limits) as gateway, connect(gateway) as sock:
        opened = time.monotonic()
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: gw\r\n\r\n")
        first, closed = read_until_closed(sock, 0.5)
        assert first.startswith(b"HTTP/1.1 200")
        assert not closed
        time.sleep(max(0.0, opened + 1.5 - time.monotonic()))
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: gw\r\n")  # never finished; deadline about 3.5 s
        _, closed = read_until_closed(sock, max(0.0, opened + 2.7 - time.monotonic()))
        assert not closed  # past the first request's deadline (2 s), within the second's
        response, closed = read_until_closed(sock, 5)
    assert closed
    assert status_and_body(response)[0] == 408


def test_idle_keep_alive_connections_are_closed(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: gw\r\n\r\n")
        response, closed = read_until_closed(sock, 4)  # keep-alive timeout 1 s (uvicorn's default: 5)
    assert response.startswith(b"HTTP/1.1 200")
    assert closed


def test_past_the_concurrency_limit_requests_get_503_at_once(gateway: GatewayProcess) -> None:
    idle = [connect(gateway) for _ in range(25)]  # connections count, as they hold resources
    try:
        # Polled: the server takes the connections from its backlog as its loop gets to them.
        response = _poll_livez(gateway, until_status=503)
        assert response.json()["error"] == "over_capacity"
        assert response.headers["retry-after"] == "1"
    finally:
        for sock in idle:
            sock.close()
    _poll_livez(gateway, until_status=200)


def _poll_livez(gateway: GatewayProcess, until_status: int) -> httpx.Response:
    until = time.monotonic() + 5  # the idle connections' header timeout is 1 s: hurry
    while True:
        response = httpx.get(gateway.base_url + "/livez")
        if response.status_code == until_status or time.monotonic() > until:
            assert response.status_code == until_status
            return response
        time.sleep(0.05)
