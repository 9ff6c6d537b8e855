"""Custom resources (the Prometheus Operator's ServiceMonitor and PrometheusRule) checked against the
`openAPIV3Schema` of their CRDs, vendored under tests/data/prometheus-operator/ (ORIGIN.md says which
release). kubernetes-validate ships schemas for the built-in kinds only.

What the API server does with a custom resource, and what this module does instead:

- **Unknown fields.** A CRD's schema is *structural*: it never says ``additionalProperties: false``,
  because the API server prunes whatever the schema does not name. With kubectl's default
  ``--validate=strict`` (server-side field validation, GA in Kubernetes 1.27) an unknown field is an
  error; with ``--validate=false`` it is silently dropped, so a misspelt ``intervall`` would never
  reach the operator either way. So every object the schema describes is closed here
  (``additionalProperties: false``), except where it opts out (``x-kubernetes-preserve-unknown-fields``)
  or says what its extra keys hold (``additionalProperties: {…}``, label maps).
- **metadata** is checked by the API server as ObjectMeta, not by the CRD: here too, with the
  ObjectMeta schema kubernetes-validate ships (its newest strict set).
- ``nullable: true`` (OpenAPI 3.0) becomes a ``null`` type; ``x-kubernetes-int-or-string`` comes with
  its own ``anyOf`` of integer and string in these CRDs, which JSON Schema reads as is.
- Not checked: CEL rules (``x-kubernetes-validations``; the two vendored CRDs have none), the
  uniqueness of ``x-kubernetes-list-type: map`` keys, and ``format`` (the API server checks only a few).
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

CRDS = Path(__file__).resolve().parent / "data" / "prometheus-operator"
# The newest schema set of the pinned kubernetes-validate (pyproject.toml), as tests/test_kubernetes.py uses.
SCHEMAS = files("kubernetes_validate") / "kubernetes-json-schema" / "v1.37.0-local-strict"
OBJECT_META = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with unknown fields refused wherever the API server would prune them."""
    result = dict(schema)
    if "properties" in schema:
        result["properties"] = {name: closed(sub) for name, sub in schema["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            result[key] = closed(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            result[key] = [closed(sub) for sub in schema[key]]
    opts_out = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if schema.get("type") == "object" and "additionalProperties" not in schema and not opts_out:
        result["additionalProperties"] = False
    if schema.get("nullable") is True and "type" in schema:
        result["type"] = [schema["type"], "null"]
    return result


@cache
def validators() -> dict[tuple[str, str], Draft202012Validator]:
    """A validator per (apiVersion, kind) that the vendored CRDs serve."""
    definitions = Resource.from_contents(json.loads((SCHEMAS / "_definitions.json").read_text()))
    registry: Registry[Any] = definitions @ Registry()
    found: dict[tuple[str, str], Draft202012Validator] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version["served"]:
                continue
            schema = closed(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"$ref": OBJECT_META}
            schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata"})
            api_version = f"{spec['group']}/{version['name']}"
            found[(api_version, spec["names"]["kind"])] = Draft202012Validator(schema, registry=registry)
    return found


def custom_resource_errors(resource: dict[str, Any]) -> list[str]:
    """What the API server would refuse in ``resource`` (empty when valid), each as ``path: reason``."""
    validator = validators().get((resource.get("apiVersion", ""), resource.get("kind", "")))
    if validator is None:
        return [f"no vendored CRD serves {resource.get('apiVersion')} {resource.get('kind')}"]
    errors = sorted(validator.iter_errors(resource), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
