"""One client address for every per-client limit (app/clientaddress.py): trusted proxies only,
the right-most untrusted X-Forwarded-For entry across every header line, IPv6 counted per /64."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.clientaddress import client_key
from app.main import create_app
from tests.conftest import SHOP_URL, SettingsFactory

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.1/32"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", [], "203.0.113.9"),
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # an untrusted peer's header is ignored
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", ["6.6.6.6, 198.51.100.1, 192.0.2.1"], "198.51.100.1"),  # skip trusted hops only
        ("10.1.2.3", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # HAProxy's own line comes last
        ("10.1.2.3", ["6.6.6.6, 7.7.7.7", "198.51.100.1, 10.2.2.2"], "198.51.100.1"),
        ("10.1.2.3", ["10.9.9.9"], "10.9.9.9"),  # every hop trusted: the left-most
        ("10.1.2.3", ["not-an-ip"], "10.1.2.3"),
        ("10.1.2.3", [" , "], "10.1.2.3"),
        ("10.1.2.3", ["1" * 70_000], "10.1.2.3"),
        ("10.1.2.3", ["6.6.6.6" + ", 10.0.0.1" * 40], "10.0.0.1"),  # past MAX_HOPS: the proxies only
        ("10.1.2.3", ["6.6.6.6", *["10.0.0.1"] * 40], "10.0.0.1"),
        ("testclient", ["198.51.100.1"], "testclient"),
        (None, [], "unknown"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", [], "2001:db8:1:2::/64"),
        ("10.1.2.3", ["2001:db8:1:2::1"], "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.4", [], "198.51.100.4"),
    ],
)
def test_client_key(peer: str | None, forwarded: list[str], expected: str) -> None:
    assert client_key(peer, forwarded, TRUSTED) == expected


def test_an_ipv6_client_is_its_64() -> None:
    same = {client_key(f"2001:db8:0:7:{i:x}::1", [], ()) for i in range(1000)}
    assert len(same) == 1
    assert client_key("2001:db8:0:8::1", [], ()) not in same


# --- every limit, through the real app, behind a trusted proxy ---------------------------------

Request = Callable[[TestClient, list[tuple[str, str]]], int]


def token(client: TestClient, headers: list[tuple[str, str]]) -> int:
    return client.get("/v1/widget-token", headers=headers).status_code


def attribution(client: TestClient, headers: list[tuple[str, str]]) -> int:
    headers = [*headers, ("Origin", SHOP_URL), ("Content-Type", "application/json")]
    return client.post("/v1/attribution", content=b'{"cartToken":"c"}', headers=headers).status_code


@pytest.fixture
def behind_proxy(make_settings: SettingsFactory) -> Callable[[], TestClient]:
    """The app, limits of 5 a minute, reached through a trusted proxy at 10.0.0.1."""

    def build() -> TestClient:
        settings = make_settings(
            gateway_token_rate_limit=5,
            gateway_attribution_rate_limit=5,
            gateway_trusted_proxies="10.0.0.0/8",
            gateway_run_worker=False,
        )
        return TestClient(create_app(settings), client=("10.0.0.1", 40_000))

    return build


@pytest.mark.parametrize("send", [token, attribution], ids=["token", "attribution"])
def test_a_client_forging_forwarded_for_lines_is_still_limited(
    behind_proxy: Callable[[], TestClient], send: Request
) -> None:
    # HAProxy's `option forwardfor` adds its own X-Forwarded-For line after the client's.
    with behind_proxy() as client:
        passed = sum(
            send(client, [("X-Forwarded-For", f"198.51.100.{i}"), ("X-Forwarded-For", "203.0.113.7")]) < 400
            for i in range(20)
        )
    assert passed == 5


@pytest.mark.parametrize("send", [token, attribution], ids=["token", "attribution"])
def test_an_ipv6_client_rotating_through_its_64_is_limited(
    behind_proxy: Callable[[], TestClient], send: Request
) -> None:
    with behind_proxy() as client:
        passed = sum(
            send(client, [("X-Forwarded-For", f"2001:db8:5:6:{i:x}:{i:x}::1")]) < 400 for i in range(20)
        )
        other = send(client, [("X-Forwarded-For", "2001:db8:5:7::1")])
    assert passed == 5
    assert other < 400  # the next /64 is another client
