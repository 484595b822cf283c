"""The container files, checked without Docker (no image registry here): the compose file against the Compose
Specification's schema, and the CPU image's steps executed as they are, in a virtual environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec" / "compose-spec.json"
SECRET_KEY = re.compile(r"(?i)(password|token|secret)")


def dockerfile_steps(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    steps, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if current.strip():
                instruction, _, args = current.strip().partition(" ")
                steps.append((instruction.upper(), args.strip()))
            current = ""
    return steps


def test_compose_file_is_valid_and_holds_no_secrets(monkeypatch):
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    validator = jsonschema.Draft201909Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    assert [e.message for e in validator.iter_errors(compose)] == []
    assert list(validator.iter_errors({"services": {"x": {"image": 3}}}))  # the schema does reject things
    services = compose["services"]
    assert {"mosquitto", "vos", "prometheus"} <= services.keys()
    vos = services["vos"]
    assert (REPO / vos["build"]["dockerfile"]).is_file() and "/healthz" in " ".join(vos["healthcheck"]["test"])
    assert "--metrics-port" in vos["command"]
    for name, service in services.items():  # mounted files of this folder exist
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).is_file(), f"{name} mounts missing {source}"
        for key, value in (service.get("environment") or {}).items():
            if SECRET_KEY.search(key):
                assert str(value).startswith("${"), f"{name}: {key} must come from the environment, not the file"
    monkeypatch.setenv("VOS_MQTT__HOST", "mosquitto")  # as compose.yaml sets it
    from vos.engine.settings import load_engine_config

    assert load_engine_config(DOCKER / "engine.yaml").streams  # the config it mounts is valid


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_copy_what_the_package_needs(name):
    steps = dockerfile_steps(DOCKER / name)
    copied = {src for instruction, args in steps if instruction == "COPY" for src in args.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "vos", "streams", "memory", "configs"}
    assert ("ENTRYPOINT", '["vos"]') in steps


@pytest.mark.parametrize("clean", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["site-packages", "clean"])
def test_cpu_image_steps_run_in_a_virtual_environment(tmp_path, clean: bool):
    """Every RUN of docker/Dockerfile, as written (ARG defaults, COPY into a stand-in root), with the venv's
    python and pip; then the image's ENTRYPOINT + CMD and a `vos serve --help` from that environment.

    CI: the venv sees this environment's packages, so the steps run without downloading torch again (its pin
    must still be what is installed); `-m slow`: a clean venv, as the image starts (about 3 minutes).
    """
    venv, root = tmp_path / "venv", tmp_path / "root"
    site = [] if clean else ["--system-site-packages"]
    subprocess.run([sys.executable, "-m", "venv", *site, str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "VOS_"))}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    args: dict[str, str] = {}
    entrypoint: list[str] = []
    command: list[str] = []
    workdir = root
    root.mkdir()
    for instruction, text in dockerfile_steps(DOCKER / "Dockerfile"):
        expand = lambda s: re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), env.get(m.group(1), "")), s)  # noqa: E731
        if instruction == "ARG":
            key, _, default = text.partition("=")
            args[key] = os.environ.get(f"DOCKER_ARG_{key}", default)
        elif instruction == "ENV":
            key, _, value = text.partition("=")
            env[key] = expand(value)
        elif instruction == "COPY":
            *sources, destination = text.split()
            target = root / destination.lstrip("/")
            for source in sources:
                into = target / Path(source).name if destination.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if (REPO / source).is_dir() else shutil.copy)(REPO / source, into)
        elif instruction == "RUN":
            script = expand(text).replace(" /tmp/", f" {root}/tmp/")
            done = subprocess.run(["bash", "-euc", script], env=env, cwd=workdir, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"RUN {text[:80]}...:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        elif instruction == "WORKDIR":
            workdir = root / text.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction in ("ENTRYPOINT", "CMD"):
            (entrypoint if instruction == "ENTRYPOINT" else command).extend(json.loads(text))
    assert not (root / "tmp" / "vos").exists()  # the image's cleanup ran
    env["VOS_CACHE_DIR"] = str(tmp_path / "cache")
    for argv in ([*entrypoint, *command], [*entrypoint, "serve", "--help"], ["python", "-c", "import torch, vos.viewer.server; print(torch.__version__)"]):
        done = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "+cpu" in done.stdout  # TORCH=cpu gave the CPU build
    page = subprocess.run(
        ["python", "-c", "from importlib import resources; print(resources.files('vos.viewer').joinpath('page.html').is_file())"],
        env=env, cwd=workdir, capture_output=True, text=True,
    )  # fmt: skip
    assert page.stdout.strip() == "True"  # package data made it into the regular install
