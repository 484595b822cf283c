"""The wheel: what it holds, vos working from it alone, and every module importing on its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import vos

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = sorted(p.stem for p in (REPO / "configs/models").glob("*.yaml") if not p.stem.startswith("_"))
TORCH_FREE = ["vos.config", "vos.tracking.prompts", "vos.streams.messages"]

# Run by the interpreter that sees only the wheel's vos; argv[1] is a checkpoint.
API_CHECK = """
import json, sys
import vos, vos.configs
cfg = vos.load_config("sam2.1_hiera_t")
model = vos.load_model("sam2.1_hiera_t", checkpoint=sys.argv[1], image_size=512)
built = vos.build_model("sam2_hiera_s", image_size=512)
files = {n: m.__file__ for n, m in sys.modules.items() if n.split(".")[0] == "vos" and getattr(m, "__file__", None)}
print(json.dumps({"models": vos.available_models(), "config": [cfg.name, cfg.image_size],
                  "sizes": [model.image_size, built.image_size], "engine_example": vos.configs.ENGINE_EXAMPLE.is_file(),
                  "files": files}))
"""

# Imports each module named in argv in a forked child of an interpreter that has loaded the heavy
# third-party modules but no vos module: each module imports on its own, in ~0.1 s instead of ~2 s.
IMPORT_EACH = """
import importlib, os, sys, traceback
import av, numba, numpy, PIL.Image, pydantic, scipy.ndimage, torch, torch._dynamo, yaml
failed, running = [], {}

def reap():
    pid, status = os.wait()
    if os.waitstatus_to_exitcode(status):
        failed.append(running[pid])
    del running[pid]

for name in sys.argv[1:]:  # a forked child per module, as many at once as there are cores
    if len(running) >= (os.cpu_count() or 1):
        reap()
    sys.stdout.flush(); sys.stderr.flush()
    if (pid := os.fork()) == 0:
        try:
            importlib.import_module(name)
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    running[pid] = name
while running:
    reap()
print(sorted(failed))
"""


def pip(*args) -> None:
    """This interpreter's pip, quietly."""
    subprocess.run([sys.executable, "-m", "pip", *map(str, args), "--quiet"], check=True, timeout=300)


def run_python(site: Path, *args: str) -> subprocess.CompletedProcess:
    """`python *args` in `site` with PYTHONPATH=site: its vos comes before the editable one in site-packages."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=site, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the checkout, built from a copy (an in-tree build would leave build/ behind and reuse it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    ignore = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "tests", "benchmarks", "docs")
    shutil.copytree(REPO, tmp / "src", ignore=ignore)
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", tmp, tmp / "src")
    (path,) = tmp.glob("vos-*.whl")
    return path


@pytest.fixture(scope="module")
def site(wheel: Path) -> Path:
    """The wheel installed into a folder of its own."""
    pip("install", "--no-deps", "--target", wheel.parent / "site", wheel)
    return wheel.parent / "site"


def wheel_modules(wheel: Path) -> list[str]:
    """Every module the wheel ships, by dotted name."""
    with zipfile.ZipFile(wheel) as z:
        paths = [n for n in z.namelist() if n.endswith(".py")]
    return sorted(p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in paths)


def test_wheel_holds_vos_and_its_configs_only(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert {n.split("/")[0] for n in names} == {"vos", f"vos-{vos.__version__}.dist-info"}
    assert "vos/configs/engine.yaml" in names and "vos/py.typed" in names
    assert sorted(n for n in names if n.startswith("vos/configs/models/")) == sorted(
        f"vos/configs/models/{p.name}" for p in (REPO / "configs/models").glob("*.yaml")
    )
    modules = wheel_modules(wheel)
    assert {"vos.streams.messages", "vos.memory.memory_bank", "vos.configs", "vos.evaluation.davis"} <= set(modules)
    folders = {"vos": "vos", "streams": "vos.streams", "memory": "vos.memory", "configs": "vos.configs"}
    sources = {
        ".".join((name, *p.relative_to(REPO / folder).with_suffix("").parts)).removesuffix(".__init__")
        for folder, name in folders.items() for p in (REPO / folder).rglob("*.py")
    }  # fmt: skip
    assert sources - set(modules) == set(), "modules of the checkout missing from the wheel (pyproject's packages)"


def test_installed_wheel_loads_models_without_the_checkout(site: Path, tiny_checkpoint: Path):
    result = run_python(site, "-c", API_CHECK, str(tiny_checkpoint))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(SHIPPED_MODELS) == 17 and out["models"] == SHIPPED_MODELS
    assert out["config"] == ["sam2.1_hiera_t", 1024] and out["sizes"] == [512, 512] and out["engine_example"]
    assert "vos.configs" in out["files"]
    outside = {n: f for n, f in out["files"].items() if not Path(f).is_relative_to(site)}
    assert not outside, f"modules imported from outside the installed wheel: {outside}"


def test_every_module_imports_on_its_own(wheel: Path, site: Path):
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    modules = wheel_modules(wheel)
    result = run_python(site, "-c", IMPORT_EACH, *modules)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("module", TORCH_FREE)
def test_light_modules_do_not_import_torch(site: Path, module: str):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'; print({module}.__file__)"
    result = run_python(site, "-c", code)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(site)
