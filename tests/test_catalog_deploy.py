"""The catalog CronJobs are code: they never overlap, never FULL, run non-root, and read secrets from
a Secret (a file for the API key), never from a literal in the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import cli_params

KUBERNETES = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
MANIFEST = KUBERNETES / "catalog-cronjobs.yaml"
# The configuration every gateway pod shares, the catalog jobs' included.
CONFIG = KUBERNETES / "config.yaml"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def cronjobs() -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == "CronJob"]


def test_a_sync_and_a_reconcile_cronjob() -> None:
    commands = {tuple(job_container(j)["command"][1:3]) for j in cronjobs()}
    assert commands == {("catalog", "sync"), ("catalog", "reconcile")}


def job_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


@pytest.mark.parametrize("job", cronjobs(), ids=lambda j: j["metadata"]["name"])
def test_cronjob_never_overlaps_and_never_wipes(job: dict[str, Any]) -> None:
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    command = job_container(job)["command"]
    assert command[0] == "neuroon-gateway"
    assert "--full" not in command
    assert "--confirm-wipe" not in command
    # The command line is one the real CLI accepts.
    assert cli_params(command[1:])["file"] == "/feed/products.jsonl"


@pytest.mark.parametrize("job", cronjobs(), ids=lambda j: j["metadata"]["name"])
def test_cronjob_runs_non_root_with_a_read_only_root(job: dict[str, Any]) -> None:
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 1000
    assert pod["restartPolicy"] == "Never"
    container = job_container(job)["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("job", cronjobs(), ids=lambda j: j["metadata"]["name"])
def test_cronjob_reads_secrets_from_a_secret(job: dict[str, Any]) -> None:
    (config,) = [d for d in yaml.safe_load_all(CONFIG.read_text()) if d["kind"] == "ConfigMap"]
    assert job_container(job)["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    data = config["data"]
    assert "NEUROON_API_KEY" not in data
    assert "REDIS_URL" not in data
    assert data["GATEWAY_PRICES_INCLUDE_TAX"] in ("true", "false")
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = job_container(job)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_mount = mounts["neuroon-secrets"]
    assert secret_mount["readOnly"] is True
    assert "secret" in volumes["neuroon-secrets"]
    assert data["NEUROON_API_KEY_FILE"].startswith(secret_mount["mountPath"] + "/")
    env = {e["name"]: e for e in container.get("env", [])}
    assert "value" not in env["REDIS_URL"]
    assert (
        env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"]
        == volumes["neuroon-secrets"]["secret"]["secretName"]
    )
    assert all("value" not in e or not e["name"].endswith(("KEY", "SECRET", "URL")) for e in env.values())
