"""The alerts (deploy/kubernetes/prometheus-rule.yaml) and the Grafana dashboard
(deploy/grafana/neuroon-gateway-dashboard.json) are code: every expression parses under promtool,
every alert passes its `promtool test rules` unit tests (tests/promtool/alerts.test.yaml), and every
metric they name is one a running gateway exports.

promtool comes from Debian's `prometheus` package; `.ci/run` installs it, so CI runs these. Without it
the promtool tests skip, saying so; the metric-name checks run everywhere."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.sandbox import Sandbox, SandboxShop, create_sandbox
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL, SettingsFactory
from tests.webhooks import SHOPIFY_SECRET, encode, shopify_headers, shopify_order

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "kubernetes" / "prometheus-rule.yaml"
RULE_TESTS = ROOT / "tests" / "promtool" / "alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "neuroon-gateway-dashboard.json"
QUEUE_DEPTH_HPA = ROOT / "deploy" / "kubernetes" / "worker-hpa-queue-depth.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`; .ci/run installs it)"
)
# What issue 11 asks to be alerted on, and the alert that does it.
REQUIRED_ALERTS = {
    "delivery paused": "NeuroonGatewayDeliveryPaused",
    "dead letters growing": "NeuroonGatewayDeadLettersGrowing",
    "oldest pending order too old": "NeuroonGatewayOldestPendingTooOld",
    "upstream errors": "NeuroonGatewayUpstreamErrors",
    "not ready": "NeuroonGatewayNotReady",
    "catalog sync failing": "NeuroonGatewayCatalogSyncFailing",
}
# Grafana's variables, replaced by what they stand for so that promtool can parse the query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$shop": ".*"}


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, Grafana's variables resolved; a
    `label_values(metric, label)` variable counts as a query of its metric."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            (metric,) = re.findall(r"^label_values\((\w+), *\w+\)$", variable["query"]["query"])
            queries.append((f"variable {variable['name']}", metric))
    return queries


# --- which metrics a PromQL expression names ---------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers that are not functions, aggregations,
    keywords or label names (in matchers or grouping clauses)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, call = match.groups()
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def test_metric_names_are_found_and_nothing_else() -> None:
    # The checks below can fail: a metric the gateway does not export is found wherever it sits.
    expr = (
        'sum by (shop, outcome) (rate(neuroon_gateway_conversions_total{outcome=~"a|b", x="up"}[5m]))'
        " / on (shop) group_left (pod) max without (pod) (kube_pod_status_ready offset 1h) > bool 3 * 3600"
        " or histogram_quantile(0.99, sum by (le) (rate(up[1m:10s])))"
        ' unless label_replace(m, "a", "b", "c", "d")'
    )
    assert metric_names(expr) == {"neuroon_gateway_conversions_total", "kube_pod_status_ready", "up", "m"}


# --- what a running gateway exports ------------------------------------------------------------


@pytest.fixture
def exported(make_settings: SettingsFactory) -> set[str]:
    """The sample names of a running gateway's /metrics (with its worker, over the sandbox) after a
    token, a webhook delivered to Neuroon and a readiness check: every family it declares (an unused
    labelled family has no sample yet, so its names are derived from its type) and every sample."""
    sandbox: Sandbox = create_sandbox([SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)])
    settings = make_settings(shopify_webhook_secret=SHOPIFY_SECRET, neuroon_api_url="http://neuroon.sandbox")
    app = create_app(settings, neuroon_transport=httpx.ASGITransport(app=sandbox.app))
    with TestClient(app) as client:
        assert client.get("/v1/widget-token").status_code == 200
        assert client.get("/readyz").status_code == 200
        body = encode(shopify_order(clicks={"SNOW-GRN-150": "log_snow"}))
        accepted = client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body))
        assert accepted.json()["status"] == "accepted", accepted.text
        deadline = time.monotonic() + 30
        while 'outcome="delivered",shop="shop_test"' not in (text := client.get("/metrics").text):
            assert time.monotonic() < deadline, "the order was not delivered"
            time.sleep(0.05)
    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
        names |= {sample.name for sample in family.samples}
    return names


def test_the_running_gateway_exports_what_the_alerts_rely_on(exported: set[str]) -> None:
    for name in (
        "neuroon_gateway_conversions_total",
        "neuroon_gateway_upstream_requests_total",
        "neuroon_gateway_ready",
        "neuroon_gateway_delivery_paused",
        "neuroon_gateway_catalog_last_success_timestamp_seconds",
    ):
        assert name in exported


def test_every_metric_of_the_alerts_is_exported(exported: set[str]) -> None:
    for alert in alerts():
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        assert names <= exported, f"{alert['alert']} names {names - exported}"


def test_every_metric_of_the_dashboard_is_exported(exported: set[str]) -> None:
    for title, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, title
        assert names <= exported, f"panel {title!r} names {names - exported}"


def test_the_queue_depth_autoscaler_names_an_exported_metric(exported: set[str]) -> None:
    hpa = yaml.safe_load(QUEUE_DEPTH_HPA.read_text())
    (external,) = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert external["metric"]["name"] in exported


# --- promtool --------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def write_rules(path: Path, groups: list[dict[str, Any]]) -> None:
    """A Prometheus rules file: what the PrometheusRule's spec holds."""
    path.write_text(yaml.safe_dump({"groups": groups}))


@needs_promtool
def test_alert_rules_pass_promtool_check(tmp_path: Path) -> None:
    write_rules(tmp_path / "rules.yaml", rule_groups())
    output = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {sum(len(g['rules']) for g in rule_groups())} rules found" in output


@needs_promtool
def test_alerts_pass_their_promtool_unit_tests(tmp_path: Path) -> None:
    write_rules(tmp_path / "rules.yaml", rule_groups())
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yaml")
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    names = {alert["alert"] for alert in alerts()}
    assert set(REQUIRED_ALERTS.values()) <= names
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == names, "an alert without a firing case"
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == names, "an alert without a quiet case"
    for alert in alerts():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"]
        assert alert["annotations"]["description"]


@needs_promtool
def test_dashboard_queries_parse_under_promtool(tmp_path: Path) -> None:
    queries = dashboard_queries()
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    write_rules(tmp_path / "dashboard.yaml", [{"name": "dashboard", "rules": rules}])
    output = promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(queries)} rules found" in output


def test_dashboard_covers_every_part_of_the_gateway() -> None:
    rows = [p["title"].lower() for p in dashboard()["panels"] if p["type"] == "row"]
    for part in ("token", "webhook", "queue", "delivery", "upstream", "catalog"):
        assert any(part in row for row in rows), part
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", "no data source of ours hard-coded"
            assert panel["targets"], panel["title"]
