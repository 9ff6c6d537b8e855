"""The ServiceMonitor and PrometheusRule in deploy/kubernetes/ are valid under the Prometheus Operator's
own CRD schemas (vendored, tests/data/prometheus-operator/ORIGIN.md), with unknown fields refused as
`kubectl apply` refuses them (tests/custom_resources.py says how)."""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

import pytest

from tests.custom_resources import CRDS, custom_resource_errors
from tests.test_kubernetes import CUSTOM_KINDS, resources


def custom_resources() -> list[dict[str, Any]]:
    return [r for r in resources() if r["kind"] in CUSTOM_KINDS]


def test_every_custom_kind_applied_is_a_monitoring_resource() -> None:
    assert sorted(r["kind"] for r in custom_resources()) == sorted(CUSTOM_KINDS)


@pytest.mark.parametrize("resource", custom_resources(), ids=lambda r: r["kind"])
def test_custom_resource_is_valid_under_its_crd(resource: dict[str, Any]) -> None:
    assert custom_resource_errors(resource) == []


def _service_monitor() -> dict[str, Any]:
    (monitor,) = [copy.deepcopy(r) for r in custom_resources() if r["kind"] == "ServiceMonitor"]
    return monitor


def _prometheus_rule() -> dict[str, Any]:
    (rule,) = [copy.deepcopy(r) for r in custom_resources() if r["kind"] == "PrometheusRule"]
    return rule


def test_a_misspelt_field_is_refused_at_every_level() -> None:
    monitor = _service_monitor()
    monitor["metadata"]["lables"] = {"a": "b"}
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    monitor["spec"]["selectr"] = {}
    assert custom_resource_errors(monitor) == [
        "metadata: Additional properties are not allowed ('lables' was unexpected)",
        "spec: Additional properties are not allowed ('selectr' was unexpected)",
        "spec.endpoints.0: Additional properties are not allowed ('intervall' was unexpected)",
    ]
    rule = _prometheus_rule()
    first = rule["spec"]["groups"][0]["rules"][0]
    first["expresion"] = first.pop("expr")
    assert custom_resource_errors(rule) == [
        "spec.groups.0.rules.0: 'expr' is a required property",
        "spec.groups.0.rules.0: Additional properties are not allowed ('expresion' was unexpected)",
    ]


def test_values_the_crd_refuses_are_refused() -> None:
    monitor = _service_monitor()
    monitor["spec"]["endpoints"][0]["scrapeTimeout"] = "10 seconds"
    monitor["spec"]["endpoints"][0]["scheme"] = "ftp"
    (scheme, timeout) = custom_resource_errors(monitor)
    assert scheme.startswith("spec.endpoints.0.scheme: 'ftp' is not one of")
    assert timeout.startswith("spec.endpoints.0.scrapeTimeout: '10 seconds' does not match")
    rule = _prometheus_rule()
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    (error,) = custom_resource_errors(rule)
    assert error.startswith("spec.groups.0.rules.0.for: '5 minutes' does not match")


def test_label_and_annotation_maps_stay_open() -> None:
    # Closing objects must not close the maps whose keys are the user's (labels, annotations).
    rule = _prometheus_rule()
    first = rule["spec"]["groups"][0]["rules"][0]
    first["labels"]["team"] = "checkout"
    first["annotations"]["runbook_url"] = "https://runbooks.example/neuroon"
    monitor = _service_monitor()
    monitor["spec"]["selector"]["matchLabels"]["tier"] = "edge"
    assert custom_resource_errors(rule) == custom_resource_errors(monitor) == []


def test_an_unknown_custom_kind_is_reported() -> None:
    monitor = _service_monitor()
    monitor["kind"] = "PodMonitor"
    assert custom_resource_errors(monitor) == ["no vendored CRD serves monitoring.coreos.com/v1 PodMonitor"]


def test_the_vendored_crds_are_the_released_files() -> None:
    # ORIGIN.md names each file's git blob at the release: any edit here shows.
    origin = (CRDS / "ORIGIN.md").read_text()
    blobs = dict(re.findall(r"^\| `([\w.]+\.yaml)` \|.*\(blob `([0-9a-f]{40})`\)", origin, re.M))
    assert sorted(blobs) == sorted(p.name for p in CRDS.glob("*.yaml"))
    for name, blob in blobs.items():
        data = (CRDS / name).read_bytes()
        # git's object id (SHA-1 is what names a blob, not a security check)
        digest = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
        assert digest == blob, name
    assert "Apache License" in (CRDS / "LICENSE").read_text()
