"""deploy/kubernetes/ is code: valid under `kubernetes-validate --strict` (the schemas ship with it, so
this runs offline), hardened, consistent with itself (selectors, ports, names), with the image and the
CLI it runs."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.embedded_redis import free_port
from app.settings import Settings
from tests.conftest import CANARY_KEY, SHOP_ID
from tests.support import GATEWAY, clean_env, cli_params

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
VALIDATE = str(Path(sys.executable).parent / "kubernetes-validate")
# Not applied by kustomization.yaml: an example and an alternative (their headers say why).
NOT_APPLIED = {"secret.example.yaml", "worker-hpa-queue-depth.yaml"}
# Custom resources of the Prometheus Operator: kubernetes-validate has no schema for them;
# test_custom_resources.py validates them against the CRDs, test_monitoring.py checks what they hold.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# The oldest Kubernetes release the manifests are written for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SECRET = "neuroon-gateway"


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def resources(*, applied_only: bool = True) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in manifest_files():
        if applied_only and path.name in NOT_APPLIED:
            continue
        found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [r for r in resources() if r["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (resource,) = [r for r in of_kind(kind) if r["metadata"]["name"] == name]
    return resource


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    result: dict[str, Any] = spec["template"]["spec"]
    return result


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    labels: dict[str, str] = spec["template"]["metadata"]["labels"]
    return labels


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment") + of_kind("CronJob")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def validate(paths: list[Path], version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VALIDATE, "--strict", "--kubernetes-version", version, *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def assert_valid(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    for line in (done.stdout + done.stderr).splitlines():
        if not line.startswith("INFO"):
            # Only the custom resources may go without a schema; anything else is a finding.
            custom = "|".join(CUSTOM_KINDS)
            assert re.search(rf"kind ({custom}) with api version monitoring\.coreos\.com/", line), line


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_under_kubernetes_validate_strict(version: str) -> None:
    assert_valid(validate(manifest_files(), version))


def test_validation_refuses_an_unknown_field(tmp_path: Path) -> None:
    # The check above can fail: a misspelt field is refused in strict mode.
    deployment = named("Deployment", "neuroon-gateway-api")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    done = validate([broken], KUBERNETES_VERSIONS[-1])
    assert done.returncode != 0
    assert "readinesProbe" in done.stdout + done.stderr


def test_kustomization_applies_every_manifest_but_the_examples() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(p.name for p in manifest_files() if p.name not in NOT_APPLIED)
    (namespace,) = of_kind("Namespace")
    assert kustomization["namespace"] == namespace["metadata"]["name"]
    # The restricted Pod Security Standard is enforced by the API server itself.
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (image,) = kustomization["images"]
    assert image["name"] == "neuroon-gateway"
    assert image["newTag"] == VERSION


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_workload_is_hardened(workload: dict[str, Any]) -> None:
    pod = pod_spec(workload)
    assert pod["automountServiceAccountToken"] is False
    assert not {"hostNetwork", "hostPID", "hostIPC"} & {k for k, v in pod.items() if v}
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    # The image's own user (Dockerfile USER), so files it owns stay readable.
    (user,) = re.findall(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert (str(security["runAsUser"]), str(security["runAsGroup"])) == user
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    for volume in pod["volumes"]:
        assert set(volume) & {"secret", "emptyDir", "persistentVolumeClaim", "configMap"}, volume
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] & 0o007 == 0, "secrets are not world-readable"
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["runAsNonRoot"] is True
        assert context.get("privileged") is not True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        assert container["image"] == f"neuroon-gateway:{VERSION}", "pinned to the release, never latest"
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert "memory" in container["resources"]["limits"]
        for mount in container["volumeMounts"]:
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            # The only writable place is an emptyDir (the root file system is read-only).
            assert mount.get("readOnly") is True or "emptyDir" in volume, mount


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_workload_runs_a_command_the_cli_accepts(workload: dict[str, Any]) -> None:
    (container,) = pod_spec(workload)["containers"]
    command = container["command"]
    assert command[0] == "neuroon-gateway"
    cli_params(command[1:])  # raises on an unknown command or option


def test_api_probes_drain_and_runs_without_the_in_process_worker() -> None:
    deployment = named("Deployment", "neuroon-gateway-api")
    pod = pod_spec(deployment)
    (container,) = pod["containers"]
    params = cli_params(container["command"][1:])
    assert params["no_worker"] is True, "delivery runs in the worker Deployment"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == params["port"]
    assert params["host"] == "0.0.0.0"
    # /metrics lists every shop: on a listener of its own, not on the port the ingress exposes.
    assert metrics_listen(container) == ("0.0.0.0", ports["metrics"])
    assert container["readinessProbe"]["httpGet"]["port"] == "http", "ready means: serves the API"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    # The pause, then uvicorn's 20 s graceful shutdown (app/cli.py), must fit in the grace period.
    assert pod["terminationGracePeriodSeconds"] > int(pause[1]) + 20
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def metrics_listen(container: dict[str, Any]) -> tuple[str, int] | None:
    """Where the container's metrics listener listens, as the gateway reads its environment."""
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return Settings(gateway_metrics_address=env["GATEWAY_METRICS_ADDRESS"]).metrics_listen


def test_worker_probes_and_metrics_use_its_metrics_listener() -> None:
    (container,) = pod_spec(named("Deployment", "neuroon-gateway-worker"))["containers"]
    params = cli_params(container["command"][1:])
    assert params["metrics_port"] is None, "--metrics-port would bind loopback, out of the kubelet's reach"
    (port,) = container["ports"]
    assert metrics_listen(container) == ("0.0.0.0", port["containerPort"])
    probes = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in probes.items():
        assert container[probe]["httpGet"] == {"path": path, "port": port["name"]}


def pod_address() -> str | None:
    """An address of this host other than loopback, as a pod's IP is to the kubelet (None if none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # a route lookup only: nothing is sent
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_worker_answers_its_probes_on_the_pod_address(
    redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    """The worker container's own command and environment, run for real: the kubelet probes (and
    Prometheus scrapes) the pod's IP, so a listener bound to loopback would fail every probe."""
    address = pod_address()
    if address is None:
        pytest.skip("this host has no address but loopback")
    (container,) = pod_spec(named("Deployment", "neuroon-gateway-worker"))["containers"]
    (declared,) = container["ports"]
    port = str(free_port())
    command = [arg.replace(str(declared["containerPort"]), port) for arg in container["command"]]
    env = {
        e["name"]: e["value"].replace(str(declared["containerPort"]), port)
        for e in container["env"]
        if "value" in e
    }
    env |= {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "REDIS_URL": redis_url}
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen([GATEWAY, *command[1:]], env=clean_env(**env), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{address}:{port}/livez", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the worker's probes never answered on the pod's address"
            time.sleep(0.1)
        assert httpx.get(f"http://{address}:{port}/readyz", timeout=2).status_code == 200
        assert "neuroon_gateway_" in httpx.get(f"http://{address}:{port}/metrics", timeout=2).text
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_services_autoscalers_and_budgets_find_their_pods() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    for service in of_kind("Service"):
        matched = [d for d in deployments.values() if selects(service["spec"]["selector"], pod_labels(d))]
        assert len(matched) == 1, service["metadata"]["name"]
        ports = {p["name"] for p in pod_spec(matched[0])["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for hpa in of_kind("HorizontalPodAutoscaler"):
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        assert hpa["spec"]["minReplicas"] >= 2, "one pod is no availability"
        # Each `kubectl apply` would reset the count the HPA chose.
        assert "replicas" not in target["spec"], "an autoscaled Deployment leaves replicas to the HPA"
    budgets = of_kind("PodDisruptionBudget")
    for deployment in deployments.values():
        labels = pod_labels(deployment)
        covering = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(covering) == 1, deployment["metadata"]["name"]


def test_service_monitor_scrapes_the_api_and_the_workers() -> None:
    (monitor,) = of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = {e["port"] for e in monitor["spec"]["endpoints"]}
    for deployment in of_kind("Deployment"):
        services = [s for s in of_kind("Service") if selects(s["spec"]["selector"], pod_labels(deployment))]
        (service,) = services
        assert selects(selector, service["metadata"]["labels"])
        assert scraped & {p["name"] for p in service["spec"]["ports"]}, service["metadata"]["name"]


def policy_ports(policies: list[dict[str, Any]], direction: str) -> set[int]:
    return {port["port"] for p in policies for rule in p["spec"].get(direction, []) for port in rule["ports"]}


def test_network_policies_cover_every_pod_and_let_its_ports_in() -> None:
    policies = of_kind("NetworkPolicy")
    for workload in workloads():
        labels = pod_labels(workload)
        applying = [p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], labels)]
        assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in applying)
        containers = pod_spec(workload)["containers"]
        served = {port["containerPort"] for c in containers for port in c.get("ports", [])}
        assert served == policy_ports(applying, "ingress"), workload["metadata"]["name"]
        assert {53, 6379, 443} <= policy_ports(applying, "egress")


def test_secrets_come_from_the_secret_and_every_key_read_is_in_the_example() -> None:
    (config,) = of_kind("ConfigMap")
    data = config["data"]
    known = {name.upper() for name in Settings.model_fields}
    assert set(data) <= known, "every ConfigMap entry is a setting the gateway reads"
    assert not {"NEUROON_API_KEY", "REDIS_URL"} & set(data)
    assert not [name for name in data if name.endswith(("_SECRET", "_KEY"))]
    (example,) = [r for r in resources(applied_only=False) if r["kind"] == "Secret"]
    keys = set(example["stringData"])
    files = {Path(v).name for k, v in data.items() if k.endswith("_FILE")}
    assert files <= keys
    for workload in workloads():
        pod = pod_spec(workload)
        mounted = {v["name"] for v in pod["volumes"] if v.get("secret", {}).get("secretName") == SECRET}
        for container in pod["containers"]:
            mounts = [m for m in container["volumeMounts"] if m["name"] in mounted]
            assert [m["mountPath"] for m in mounts] == ["/run/secrets/neuroon"]
            assert {c["configMapRef"]["name"] for c in container["envFrom"]} == {config["metadata"]["name"]}
            env = {e["name"]: e for e in container["env"]}
            assert all(
                "value" not in e or not e["name"].endswith(("_SECRET", "_KEY", "_URL")) for e in env.values()
            )
            assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "redis-url"}
    assert "redis-url" in keys


def test_the_catalog_feed_volume_is_defined() -> None:
    claims = {c["metadata"]["name"] for c in of_kind("PersistentVolumeClaim")}
    for job in of_kind("CronJob"):
        for volume in pod_spec(job)["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
