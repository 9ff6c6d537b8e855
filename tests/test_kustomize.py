"""`kubectl kustomize deploy/kubernetes` (what `kubectl apply -k` applies) renders every resource the
kustomization lists, each valid, in the namespace, with the pinned image, and the references between the
rendered objects line up: what test_kubernetes.py checks on the files, checked on what reaches the API.

kubectl has kustomize built in since 1.14. Debian's `kubernetes-client` (bookworm: kubectl 1.20, with
kustomize v2) renders this kustomization exactly as kubectl 1.32 (kustomize v5.5) does; .ci/run
installs it where kubectl is missing. Without kubectl these tests skip.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.custom_resources import custom_resource_errors
from tests.test_kubernetes import (
    CUSTOM_KINDS,
    KUBERNETES,
    KUBERNETES_VERSIONS,
    assert_valid,
    pod_labels,
    pod_spec,
    selects,
    validate,
)

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed (.ci/run installs Debian's kubernetes-client)"
)
KUSTOMIZATION = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
CLUSTER_SCOPED = {"Namespace"}
WORKLOAD_KINDS = {"Deployment", "CronJob"}
# Referenced by the pods, created by the operator, never by the kustomization (so that applying it never
# overwrites real secrets): secret.example.yaml shows its keys, kustomization.yaml's header how to create it.
OPERATORS = {("Secret", "neuroon-gateway")}


def render(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, check=False)
    if done.returncode != 0 and "unknown command" in done.stderr:
        pytest.skip("this kubectl has no built-in kustomize (kubectl 1.14 and later have)")
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(KUBERNETES)


def key(resource: dict[str, Any]) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


def test_every_listed_resource_is_rendered_once_in_the_namespace(rendered: list[dict[str, Any]]) -> None:
    listed: Counter[tuple[str, str]] = Counter()
    for name in KUSTOMIZATION["resources"]:
        listed.update(key(d) for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d)
    assert Counter(map(key, rendered)) == listed
    for resource in rendered:
        namespace = resource["metadata"].get("namespace")
        expected = None if resource["kind"] in CLUSTER_SCOPED else KUSTOMIZATION["namespace"]
        assert namespace == expected, key(resource)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_render_is_valid_under_kubernetes_validate_strict(
    rendered: list[dict[str, Any]], version: str, tmp_path: Path
) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(rendered))
    assert_valid(validate([path], version))


def test_the_rendered_custom_resources_are_valid_under_their_crds(rendered: list[dict[str, Any]]) -> None:
    custom = [r for r in rendered if r["kind"] in CUSTOM_KINDS]
    assert sorted(r["kind"] for r in custom) == sorted(CUSTOM_KINDS)
    for resource in custom:
        assert custom_resource_errors(resource) == [], key(resource)


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = pod["containers"] + pod.get("initContainers", [])
    return found


def images(rendered: list[dict[str, Any]]) -> list[str]:
    return [c["image"] for r in rendered if r["kind"] in WORKLOAD_KINDS for c in containers(pod_spec(r))]


def test_every_container_runs_the_image_the_kustomization_pins(rendered: list[dict[str, Any]]) -> None:
    (image,) = KUSTOMIZATION["images"]
    assert image["newTag"] != "latest"
    assert set(images(rendered)) == {f"{image['newName']}:{image['newTag']}"}


def test_the_kustomization_images_entry_reaches_every_container(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    # The one place to set a registry and a digest (kustomization.yaml): every container must follow it.
    copied = shutil.copytree(KUBERNETES, tmp_path / "kubernetes")
    kustomization = copy.deepcopy(KUSTOMIZATION)
    registry, digest = "registry.example.com/shop/neuroon-gateway", "sha256:" + "0123456789abcdef" * 4
    kustomization["images"][0] |= {"newName": registry, "digest": digest}
    (copied / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    found = images(render(copied))
    assert len(found) == len(images(rendered))
    tag = re.escape(kustomization["images"][0]["newTag"])
    # kustomize v5 keeps the tag beside the digest; v2 (Debian's kubectl) writes the digest alone.
    assert all(re.fullmatch(rf"{re.escape(registry)}(:{tag})?@{digest}", image) for image in found), found


def findings(rendered: list[dict[str, Any]]) -> list[str]:
    """Every reference between rendered objects that points at nothing (empty when all line up)."""
    found: list[str] = []
    names = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) for r in rendered}
    workloads = [r for r in rendered if r["kind"] in WORKLOAD_KINDS]

    def pods_selected(namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        return [
            w
            for w in workloads
            if w["metadata"]["namespace"] == namespace and selects(selector, pod_labels(w))
        ]

    for r in rendered:
        kind, name, spec = r["kind"], r["metadata"]["name"], r.get("spec", {})
        namespace = r["metadata"].get("namespace")
        where = f"{kind} {name}"
        if kind == "Service":
            pods = pods_selected(namespace, spec["selector"])
            ports = pod_ports(pods)
            if not pods:
                found.append(f"{where} selects no pod")
            found += [
                f"{where}: no pod port {p['targetPort']}"
                for p in spec["ports"]
                if p["targetPort"] not in ports
            ]
        elif kind == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            if (target["kind"], namespace, target["name"]) not in names:
                found.append(f"{where} scales a missing {target['kind']} {target['name']}")
        elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = spec["selector" if kind == "PodDisruptionBudget" else "podSelector"]["matchLabels"]
            if not pods_selected(namespace, selector):
                found.append(f"{where} selects no pod")
        elif kind == "ServiceMonitor":
            services = [
                s
                for s in rendered
                if s["kind"] == "Service"
                and s["metadata"]["namespace"] == namespace
                and selects(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))
            ]
            if not services:
                found.append(f"{where} selects no Service")
            ports = {p.get("name") for s in services for p in s["spec"]["ports"]}
            found += [
                f"{where}: no Service port {e['port']}" for e in spec["endpoints"] if e["port"] not in ports
            ]
        if kind in WORKLOAD_KINDS:
            for ref_kind, ref_name in pod_references(pod_spec(r)):
                if (ref_kind, namespace, ref_name) not in names and (ref_kind, ref_name) not in OPERATORS:
                    found.append(f"{where} reads a missing {ref_kind} {ref_name}")
    return found


def pod_ports(workloads: list[dict[str, Any]]) -> set[str | int]:
    """The ports of these workloads' pods, by name and by number (a Service's targetPort is either)."""
    ports = [p for w in workloads for c in containers(pod_spec(w)) for p in c.get("ports", [])]
    return {p["name"] for p in ports if "name" in p} | {p["containerPort"] for p in ports}


def pod_references(pod: dict[str, Any]) -> list[tuple[str, str]]:
    """The ConfigMaps, Secrets and PersistentVolumeClaims a pod reads, as (kind, name)."""
    refs: list[tuple[str, str]] = []
    for volume in pod.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        refs += [("ConfigMap", s["configMap"]["name"]) for s in sources if "configMap" in s]
        refs += [
            ("Secret", s["secret"].get("secretName") or s["secret"]["name"]) for s in sources if "secret" in s
        ]
        if "persistentVolumeClaim" in volume:
            refs.append(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    for container in containers(pod):
        for source in container.get("envFrom", []):
            refs += [("ConfigMap", source["configMapRef"]["name"])] if "configMapRef" in source else []
            refs += [("Secret", source["secretRef"]["name"])] if "secretRef" in source else []
        for env in container.get("env", []):
            value_from = env.get("valueFrom", {})
            refs += (
                [("ConfigMap", value_from["configMapKeyRef"]["name"])]
                if "configMapKeyRef" in value_from
                else []
            )
            refs += [("Secret", value_from["secretKeyRef"]["name"])] if "secretKeyRef" in value_from else []
    return refs


def test_references_between_rendered_objects_line_up(rendered: list[dict[str, Any]]) -> None:
    assert findings(rendered) == []
    # Every pod reads something, and what the operator provides is read: the list above is not idle.
    read = {ref for r in rendered if r["kind"] in WORKLOAD_KINDS for ref in pod_references(pod_spec(r))}
    assert read > OPERATORS
    assert {"ConfigMap", "PersistentVolumeClaim"} <= {kind for kind, _ in read}


def test_broken_references_are_found(rendered: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(rendered)
    by_key = {key(r): r for r in broken}
    pod_labels(by_key["Deployment", "neuroon-gateway-worker"])["app.kubernetes.io/component"] = "wrker"
    by_key["HorizontalPodAutoscaler", "neuroon-gateway-api"]["spec"]["scaleTargetRef"]["name"] = "api"
    by_key["ServiceMonitor", "neuroon-gateway"]["spec"]["endpoints"][0]["port"] = "metric"
    reconcile = pod_spec(by_key["CronJob", "neuroon-catalog-reconcile"])
    reconcile["containers"][0]["envFrom"][0]["configMapRef"]["name"] = "neuroon-gateway-config"
    next(v for v in reconcile["volumes"] if "persistentVolumeClaim" in v)["persistentVolumeClaim"][
        "claimName"
    ] = "feed"
    assert sorted(findings(broken)) == sorted(
        [
            "Service neuroon-gateway-worker selects no pod",
            "Service neuroon-gateway-worker: no pod port metrics",
            "HorizontalPodAutoscaler neuroon-gateway-api scales a missing Deployment api",
            "PodDisruptionBudget neuroon-gateway-worker selects no pod",
            "NetworkPolicy neuroon-gateway-worker selects no pod",
            "CronJob neuroon-catalog-reconcile reads a missing PersistentVolumeClaim feed",
            "CronJob neuroon-catalog-reconcile reads a missing ConfigMap neuroon-gateway-config",
            "ServiceMonitor neuroon-gateway: no Service port metric",
        ]
    )


def test_the_operators_secret_is_documented_with_every_key_the_pods_read(
    rendered: list[dict[str, Any]],
) -> None:
    (example,) = [d for d in yaml.safe_load_all((KUBERNETES / "secret.example.yaml").read_text()) if d]
    header = (KUBERNETES / "kustomization.yaml").read_text()
    for kind, name in OPERATORS:
        assert (example["kind"], example["metadata"]["name"]) == (kind, name)
        assert f"create secret generic {name}" in header
    read = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for r in rendered
        if r["kind"] in WORKLOAD_KINDS
        for c in containers(pod_spec(r))
        for env in c.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert read
    assert read <= set(example["stringData"])
