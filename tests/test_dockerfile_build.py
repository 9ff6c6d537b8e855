"""The Dockerfile's builder stage, executed: its COPY/WORKDIR/ENV/RUN steps run in order in a scratch
directory (every absolute path of the image re-rooted under it), then the runtime stage's CMD starts
from the result and answers /livez. No Docker engine is needed, and a builder that installs a broken
package (issue 11: the stub `app/__init__.py` left in `build/lib`) fails here, not in production.

COPY keeps the files' modification times, as Docker does: that is what made the stub win."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePath

import httpx
import pytest

from tests.support import clean_env, run_gateway

ROOT = Path(__file__).resolve().parent.parent
# An absolute path inside the image: "/" not preceded by a path or URL character (so `http://x/y`
# and `a/b` stay as they are).
IMAGE_PATH = re.compile(r"(?<![\w.:/~$-])/(?=[\w.])")


@dataclass
class Stage:
    name: str
    steps: list[tuple[str, str]] = field(default_factory=list)


def stages(dockerfile: str) -> dict[str, Stage]:
    """The Dockerfile's stages by name, each a list of (INSTRUCTION, arguments), comments and
    line continuations resolved."""
    uncommented = "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
    logical = re.sub(r"\\\n", " ", uncommented)
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical.splitlines():
        if not line.strip():
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            match = re.search(r"\bAS\s+(\S+)$", arguments, re.I)
            assert match, f"every stage is named: {line}"
            current = found.setdefault(match.group(1), Stage(match.group(1)))
        elif current is not None:
            current.steps.append((instruction.upper(), arguments.strip()))
    return found


def excluded(relative: str) -> bool:
    """Whether .dockerignore keeps a path (relative to the context) out of the build context."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    name = PurePath(relative).name
    return any(fnmatch(relative, p) or (p.startswith("**/") and fnmatch(name, p[3:])) for p in patterns)


def outside_context(directory: str, names: list[str]) -> set[str]:
    relative = Path(directory).relative_to(ROOT)
    return {name for name in names if excluded(str(relative / name))}


class Scratch:
    """The image's file system, under a directory of ours."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cwd = root
        python = root / "usr" / "local" / "bin" / "python"  # the base image's interpreter
        python.parent.mkdir(parents=True)
        python.symlink_to(getattr(sys, "_base_executable", sys.executable))
        outside = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")  # this test's own interpreter's
        self.env = {k: v for k, v in clean_env().items() if k not in outside}
        self.env["PATH"] = f"{python.parent}:/usr/bin:/bin"

    def reroot(self, text: str) -> str:
        return IMAGE_PATH.sub(f"{self.root}/", text)

    def path(self, image_path: str) -> Path:
        return Path(self.reroot(image_path)) if image_path.startswith("/") else self.cwd / image_path

    def apply(self, instruction: str, arguments: str) -> None:
        if instruction == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", arguments):
                self.env[name] = os.path.expandvars(self.reroot(value)).replace("$PATH", self.env["PATH"])
        elif instruction == "WORKDIR":
            self.cwd = self.path(arguments)
            self.cwd.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            self.copy(arguments)
        elif instruction == "RUN":
            done = subprocess.run(
                ["/bin/sh", "-c", self.reroot(arguments)],
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, f"RUN {arguments}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        else:
            assert instruction in ("ARG", "LABEL"), f"the test does not know how to execute {instruction}"

    def copy(self, arguments: str) -> None:
        assert not arguments.startswith("--"), "the builder copies only from the build context"
        *sources, destination = arguments.split()
        target = self.path(destination)
        for source in sources:
            origin = ROOT / source
            assert not excluded(source), f"{source} is not in the build context (.dockerignore)"
            if origin.is_dir():
                # Docker copies a directory's contents into the target, keeping modification times.
                shutil.copytree(origin, target, dirs_exist_ok=True, ignore=outside_context)
            else:
                into = target / origin.name if destination.endswith("/") or len(sources) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)


@pytest.mark.timeout(600)  # a real pip install of the pinned dependencies
def test_builder_stage_produces_an_install_that_starts(redis_url: str, tmp_path: Path) -> None:
    dockerfile = stages((ROOT / "Dockerfile").read_text())
    scratch = Scratch(tmp_path / "image")
    for instruction, arguments in dockerfile["builder"].steps:
        scratch.apply(instruction, arguments)

    runtime = dockerfile["runtime"]
    for instruction, arguments in runtime.steps:
        if instruction == "ENV":
            scratch.apply(instruction, arguments)
    helped = subprocess.run(
        ["neuroon-gateway", "--help"],
        cwd=tmp_path,
        env=scratch.env,
        capture_output=True,
        text=True,
        check=False,
        executable=shutil.which("neuroon-gateway", path=scratch.env["PATH"]),
    )
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout

    # The image's own command (run_gateway appends a free --port, which wins over the CMD's).
    (cmd,) = [json.loads(arguments) for instruction, arguments in runtime.steps if instruction == "CMD"]
    installed = shutil.which(cmd[0], path=scratch.env["PATH"])
    assert installed is not None
    assert installed.startswith(str(scratch.root)), "the command comes from the image's venv"
    env = scratch.env | {"NEUROON_SHOP_ID": "shop_image", "NEUROON_SHOP_URL": "https://shop.example"}
    env |= {"NEUROON_API_KEY": "sk_" + "0" * 32, "REDIS_URL": redis_url}
    with run_gateway(cmd[1:], env, tmp_path, gateway=installed) as gateway:
        assert httpx.get(gateway.base_url + "/livez").status_code == 200
        assert httpx.get(gateway.base_url + "/readyz").status_code == 200
        assert "neuroon_gateway_" in httpx.get(gateway.base_url + "/metrics").text
    assert gateway.proc.returncode == 0, gateway.output()
