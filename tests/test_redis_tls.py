"""TLS URLs of every shape (interface §2: ``rediss://``; ``rediss+sentinel://``, TLS to the data nodes;
``rediss+cluster://``), against real servers with certificates made by the test.

The data nodes listen on TLS only (``--port 0``): a plain-text connection to them fails, so
everything the gateway stored there went over TLS. The Sentinels take clients in plain text, as
interface §2 has it, and speak TLS to the data nodes and to each other; Sentinels that speak only
TLS are not supported (README, "Redis topologies"). The CA is given with ``?ssl_ca_certs=``.

The embedded Valkey is built without TLS: these tests use a server that has it (tests/tls_servers.py)
and skip, saying why, where there is none. Each runs in the suite's pass for its shape
(GATEWAY_TEST_REDIS), like tests/test_failover.py, and only there.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.embedded_redis import EmbeddedRedis, free_port
from app.sandbox import Sandbox, SandboxShop, create_sandbox
from tests.conftest import _REDIS_SHAPE, CANARY_KEY, SHOP_ID, SHOP_URL, SettingsFactory
from tests.redis_shapes import SHAPES, Cluster, OneServer, SentinelSet, wait_for
from tests.support import run_command, run_gateway
from tests.test_failover import SHOP_KEY, _delivered, _gateway, _running
from tests.tls_servers import NO_TLS_SERVER, make_ca, server_tls, tls_server_binary
from tests.webhooks import encode, generic_order, standard_headers

pytestmark = pytest.mark.timeout(180)  # a topology of its own to start


Topology = OneServer | SentinelSet | Cluster


# Each shape with server certificates; one server also with client certificates (mutual TLS). Only
# this pass's shape is collected: the others run in their own pass (a skip each would say only that).
VARIANTS = [
    pytest.param(variant, id=f"{variant[0]}{'-mutual' if variant[1] else ''}")
    for variant in [*((shape, False) for shape in SHAPES), ("server", True)]
    if variant[0] == _REDIS_SHAPE
]


@pytest.fixture(scope="module", params=VARIANTS)
def tls_topology(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    shape, client_certificates = request.param
    binary = tls_server_binary()
    if binary is None:
        pytest.skip(NO_TLS_SERVER)
    root = tmp_path_factory.mktemp(f"tls-{shape}")
    tls = replace(server_tls(root / "certs"), client_certificates=client_certificates)
    kind = {"server": OneServer, "sentinel": SentinelSet, "cluster": Cluster}[shape]
    yield from _running(kind(root / shape, binary=binary, tls=tls))


@pytest.fixture
def sandbox() -> Sandbox:
    return create_sandbox([SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)])


def _data_nodes(topology: Topology) -> list[EmbeddedRedis]:
    return topology.data if isinstance(topology, SentinelSet) else topology.nodes


def _over_tls(node: EmbeddedRedis) -> Any:
    return redis.Redis(**node.client_kwargs(), socket_timeout=2)


def _shop_primary(topology: Topology) -> EmbeddedRedis:
    if isinstance(topology, OneServer):
        return topology.node
    return topology.primary() if isinstance(topology, SentinelSet) else topology.primary_of(SHOP_KEY)


def test_the_gateway_serves_every_flow_over_tls(
    tls_topology: Topology, make_settings: SettingsFactory, sandbox: Sandbox
) -> None:
    url = tls_topology.url
    assert url.startswith(("rediss://", "rediss+sentinel://", "rediss+cluster://"))
    assert "ssl_ca_certs=" in url
    with _gateway(make_settings, sandbox, url) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        token = client.get("/v1/widget-token")
        assert token.status_code == 200, token.text
        assert token.json()["shopId"] == SHOP_ID
        payload = encode(generic_order("TLS-1", shop_id=SHOP_ID))
        answer = client.post("/v1/webhooks/orders", content=payload, headers=standard_headers(payload))
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "accepted"
        wait_for(lambda: _delivered(sandbox)["TLS-1"], 30, "the order's delivery")
        time.sleep(1)  # a second delivery would come in this time (retries are 0.2 s apart)
        assert _delivered(sandbox)["TLS-1"] == 1
    # What the gateway stored is on the shop's primary, whose only port speaks TLS.
    primary = _shop_primary(tls_topology)
    with _over_tls(primary) as over_tls:
        assert over_tls.exists(SHOP_KEY)
        assert over_tls.config_get("port")["port"] == "0"


def test_the_data_nodes_refuse_plain_text(tls_topology: Topology) -> None:
    for node in _data_nodes(tls_topology):
        with _over_tls(node) as over_tls:
            assert over_tls.ping()
        plain = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
        with plain, pytest.raises(redis.RedisError):
            plain.ping()


def test_the_serve_command_starts_over_tls(tls_topology: Topology, tmp_path: Path) -> None:
    env = {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "REDIS_URL": tls_topology.url}
    with run_gateway(["serve", "--no-worker"], env, tmp_path) as gateway:
        response = wait_for(lambda: _ready(gateway.base_url), 30, "/readyz 200")
        assert response.json()["redis"] == "up"


def _ready(base_url: str) -> httpx.Response | None:
    response = httpx.get(base_url + "/readyz", timeout=5)
    return response if response.status_code == 200 else None


@pytest.mark.parametrize("command", [["serve", "--port"], ["worker"]])
def test_a_wrong_ca_stops_start_up_naming_redis_url(
    tls_topology: Topology, tmp_path: Path, command: list[str]
) -> None:
    """A CA that did not sign the nodes' certificate: exit 2 naming REDIS_URL (README, "Configuration"),
    and nothing of the URL's password in the output."""
    other_ca, _, _ = make_ca(tmp_path / "other", "other-ca")
    password = secrets.token_hex(12)
    scheme, rest = tls_topology.url.split("://", 1)
    hosts_and_path, query = rest.split("?", 1)
    assert query.startswith("ssl_ca_certs=")
    url = f"{scheme}://admin:{password}@{hosts_and_path}?ssl_ca_certs={other_ca}"
    if command[0] == "serve":
        command = [*command, str(free_port())]  # it never gets as far as listening
    env = {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "REDIS_URL": url}
    for log_format in ("json", "console"):
        result = run_command(command, env | {"GATEWAY_LOG_FORMAT": log_format}, tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "REDIS_URL" in output
        assert "certificate" in output
        assert "Traceback" not in output
        assert not any(password[i : i + 6] in output for i in range(len(password) - 5))
        assert "admin" not in output


def test_without_its_client_certificate_the_gateway_is_not_ready(
    tls_topology: Topology, make_settings: SettingsFactory, sandbox: Sandbox
) -> None:
    """Where the nodes want a client certificate, a URL without one gets nothing (503). At start-up
    this is not always seen as a TLS failure: TLS 1.3 refuses the certificate after the handshake,
    and the refusal may arrive as a closed connection."""
    if not tls_topology.nodes[0].tls or not tls_topology.nodes[0].tls.client_certificates:
        pytest.skip("the nodes of this variant want no client certificate")
    url = tls_topology.url.split("&ssl_certfile=", 1)[0]
    assert "ssl_keyfile" not in url
    with _gateway(make_settings, sandbox, url) as client:
        assert client.get("/readyz").status_code == 503
        payload = encode(generic_order("NOCERT-1", shop_id=SHOP_ID))
        answer = client.post("/v1/webhooks/orders", content=payload, headers=standard_headers(payload))
        assert answer.status_code == 503, answer.text


def test_a_plain_url_to_tls_nodes_is_not_ready(
    tls_topology: Topology, make_settings: SettingsFactory, sandbox: Sandbox
) -> None:
    """The scheme without its s: the nodes do not answer plain text, so nothing is accepted (503) and
    /readyz says why; nothing is stored unencrypted."""
    plain = tls_topology.url.replace("rediss", "redis", 1).split("?", 1)[0]
    with _gateway(make_settings, sandbox, plain) as client:
        assert client.get("/readyz").status_code == 503
        payload = encode(generic_order("PLAIN-1", shop_id=SHOP_ID))
        answer = client.post("/v1/webhooks/orders", content=payload, headers=standard_headers(payload))
        assert answer.status_code == 503, answer.text
