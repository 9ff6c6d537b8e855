"""Probes, metrics, request ids, JSON logs, the error shape, and serving through a Redis outage."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fastapi.testclient import TestClient

from app import metrics
from app.embedded_redis import EmbeddedRedis
from app.logging import JsonFormatter
from app.main import create_app
from tests.conftest import SettingsFactory


def test_livez_touches_nothing(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok"}


def test_readyz_when_redis_answers(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["redis"] == "up"


def test_metrics_expose_our_families(client: TestClient) -> None:
    client.get("/v1/widget-token")
    text = client.get("/metrics").text
    for family in (
        "neuroon_gateway_widget_tokens_served_total",
        "neuroon_gateway_widget_token_signatures_total",
        "neuroon_gateway_http_requests_total",
        "neuroon_gateway_http_request_duration_seconds",
    ):
        assert f"# TYPE {family.removesuffix('_total')}" in text
    assert 'neuroon_gateway_http_requests_total{method="GET",route="/v1/widget-token",status="200"}' in text


def test_metric_labels_carry_route_templates_not_paths(client: TestClient) -> None:
    client.get("/no/such/path/12345")
    text = client.get("/metrics").text
    assert "12345" not in text
    assert 'route="unmatched"' in text


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "Not Found"}
    wrong = client.post("/v1/widget-token")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"


def test_request_id_is_returned_and_a_plain_caller_id_is_kept(client: TestClient) -> None:
    generated = client.get("/livez").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/livez", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    hostile = "x" * 65 + '"}{"forged": 1'
    assert client.get("/livez", headers={"X-Request-ID": hostile}).headers["x-request-id"] != hostile


def test_access_log_is_json_with_the_request_id(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        response = client.get("/v1/widget-token", headers={"X-Request-ID": "req-42"})
    records = [r for r in caplog.records if r.name == "app.access"]
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["event"] == "request"
    assert line["request_id"] == "req-42" == response.headers["x-request-id"]
    assert line["route"] == "/v1/widget-token"
    assert line["status"] == 200


def test_token_keeps_being_served_when_redis_stops(
    make_settings: SettingsFactory, own_redis: EmbeddedRedis
) -> None:
    settings = make_settings(
        redis_url=own_redis.url, gateway_token_memory_ttl=0.01, gateway_token_rate_limit=5
    )
    with TestClient(create_app(settings)) as client:
        before = client.get("/v1/widget-token").json()["token"]
        own_redis.kill()
        # The limiter syncs in the background: its first sync after the kill fails and opens the
        # token path's breaker (until then this replica's own count of the client still applies).
        assert client.get("/v1/widget-token").status_code == 200
        time.sleep(0.5)
        for _ in range(10):  # past the rate limit too: it fails open without Redis
            response = client.get("/v1/widget-token")
            assert response.status_code == 200
            assert response.json()["token"] == before
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["redis"] == "down"


def test_ready_gauge_follows_the_readiness_check(
    make_settings: SettingsFactory, own_redis: EmbeddedRedis
) -> None:
    with TestClient(create_app(make_settings(redis_url=own_redis.url))) as client:
        assert client.get("/readyz").status_code == 200
        assert "\nneuroon_gateway_ready 1.0\n" in client.get("/metrics").text
        own_redis.kill()
        assert client.get("/readyz").status_code == 503
        assert "\nneuroon_gateway_ready 0.0\n" in client.get("/metrics").text


def test_ready_gauge_has_no_sample_before_the_first_check() -> None:
    # A process that nothing probes must not look unready to the alert.
    (family,) = metrics.ReadinessCollector().collect()
    assert family.name == "neuroon_gateway_ready"
    assert family.samples == []


def test_token_is_signed_locally_when_redis_is_down_from_the_start(
    make_settings: SettingsFactory, own_redis: EmbeddedRedis
) -> None:
    own_redis.kill()
    with TestClient(create_app(make_settings(redis_url=own_redis.url))) as client:
        response = client.get("/v1/widget-token")
        assert response.status_code == 200
        assert response.json()["token"]
        assert 'source="signed"' in client.get("/metrics").text
