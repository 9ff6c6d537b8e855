"""The Dockerfile and deploy manifests are code: these tests hold them to what the README promises."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.tls_servers import TLS_SERVERS

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.upper().startswith(name + " ")]


def test_image_is_multi_stage_from_a_pinned_base() -> None:
    assert len(instructions("FROM")) >= 2
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), "pin the exact Python patch release"


def test_image_runs_as_a_fixed_non_root_uid() -> None:
    (user,) = instructions("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) >= 1000


def test_image_starts_the_gateway_in_exec_form_with_a_health_check() -> None:
    (cmd,) = instructions("CMD")
    assert cmd.startswith("[")
    assert cmd.startswith('["neuroon-gateway", "serve"')
    assert '"0.0.0.0"' in cmd
    (health,) = instructions("HEALTHCHECK")
    assert "/livez" in health
    assert "CMD [" in health


def test_image_copies_only_files_that_exist() -> None:
    for copy in instructions("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _ = shlex.split(copy)
        for source in sources:
            assert (ROOT / source).exists(), source


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    return data


def test_compose_redis_is_durable_and_never_evicts() -> None:
    redis = compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert redis["healthcheck"]["test"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_compose_gateway_reads_its_key_from_a_secret_file() -> None:
    services = compose()["services"]
    gateway = services["gateway"]
    env = gateway["environment"]
    assert "NEUROON_API_KEY" not in env
    assert env["NEUROON_API_KEY_FILE"] == "/run/secrets/neuroon_api_key"
    assert gateway["secrets"] == ["neuroon_api_key"]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["healthcheck"]["test"]
    assert env["REDIS_URL"].startswith("redis://redis:")


def test_ci_installs_the_programs_that_tests_skip_without() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    # The module-level look-ups that skip markers test: NAME = shutil.which("x") or next(... (candidates)).
    looked_up = set(re.findall(r'^[A-Z_]+ = shutil\.which\("([\w-]+)"\)', tests, re.M))
    for candidates in re.findall(r"^[A-Z_]+ = next\(.*map\(shutil\.which, \(([^)]*)\)\)", tests, re.M):
        looked_up |= set(re.findall(r'"([\w-]+)"', candidates))
    assert {"promtool", "php", "chromium", "kubectl"} <= looked_up
    installed = set(re.findall(r"\bhave ([\w-]+)", script))
    assert looked_up <= installed
    assert TLS_SERVERS[0] in installed, "the TLS tests' server (tests/tls_servers.py)"
    assert script.rstrip().splitlines()[-1] == "make test", "CI runs exactly the README's test command"


def test_ci_without_apt_runs_make_test_and_says_what_will_skip(tmp_path: Path) -> None:
    # Only the shell's basics on PATH: no promtool, php, wrk, chromium, kubectl nor apt-get; `make` records
    # its call.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "id"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "make").write_text(f'#!{shutil.which("bash")}\necho "$@" > {tmp_path}/make-args\n')
    (bin_dir / "make").chmod(0o755)
    done = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / ".ci" / "run")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "need prometheus php-cli wrk chromium kubernetes-client redis-server will skip" in done.stderr
    assert (tmp_path / "make-args").read_text().split() == ["test"]


def test_compose_runs_the_api_and_a_worker_from_one_image_and_configuration() -> None:
    services = compose()["services"]
    gateway, worker = services["gateway"], services["worker"]
    assert gateway["command"][:2] == ["neuroon-gateway", "serve"]
    assert "--no-worker" in gateway["command"]
    assert worker["command"][:2] == ["neuroon-gateway", "worker"]
    for key in ("image", "build", "environment", "secrets", "depends_on", "read_only"):
        assert worker[key] == gateway[key], key
    assert not any(s.get("image", "").endswith(":latest") for s in services.values())
