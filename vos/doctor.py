"""`vos doctor`: what this machine can do and what vos will pick on it.

The CPU and its instruction sets, torch and CUDA, the installed extras and tools, the cached checkpoints, and the
model, runtime and precision recommended for live tracking here, with the commands to run. torch is imported only
to ask it about the machine: a missing torch is reported, not raised.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CPU_FLAGS = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, which the viewer tests drive (scripts/install-dev.sh installs it)
LIVE_MODEL = "edgetam"
LIVE_SIZE = 512
ONNX_DIR = f"onnx/{LIVE_MODEL}-{LIVE_SIZE}"


@dataclass
class Package:
    name: str
    version: str | None  # None: not installed
    wanted: str = ""  # the requirement, e.g. "torch>=2.3"
    ok: bool = False  # installed, at a version the requirement allows


@dataclass
class Recommendation:
    model: str
    backend: str
    precision: str
    device: str
    why: str
    commands: list[str] = field(default_factory=list)


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and which of `CPU_FLAGS` it has (Linux: /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, []
    if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
        name = m.group(1).strip()
    if m := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
        flags = set(m.group(1).split())
    return name, [f for f in CPU_FLAGS if f in flags]


def cpu_native_bf16() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX-512 BF16 or AMX), as torch sees it (`vos.device.native_bf16`)."""
    from vos.device import native_bf16

    return native_bf16("cpu")


def cuda_device() -> str | None:
    """The first CUDA GPU's name, or None."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def installed(name: str) -> str | None:
    """The installed version of the distribution `name`, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package(requirement: str) -> Package:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
    version = installed(name)
    spec = requirement.split(";")[0].strip()
    ok = version is not None
    if ok:
        try:
            from packaging.requirements import Requirement

            ok = Requirement(spec).specifier.contains(version, prereleases=True)
        except ImportError:  # no packaging: presence is all that is checked
            pass
    return Package(name, version, spec, ok)


def requirements() -> dict[str, list[Package]]:
    """vos's own requirements from its installed metadata: "core" and one list per extra."""
    groups: dict[str, list[Package]] = {"core": []}
    for requirement in importlib.metadata.requires("vos") or []:
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        groups.setdefault(extra.group(1) if extra else "core", []).append(_package(requirement))
    return groups


def tools() -> dict[str, str | None]:
    """Programs the optional features start: Chromium (viewer tests, pictures) and Mosquitto (MQTT tests, demos)."""
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    return {"chromium": str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium"), "mosquitto": mosquitto}


def cached_checkpoints() -> list[tuple[str, str, int]]:
    """(file, model names it is the checkpoint of, size in MB) for every .pt file in the checkpoint cache."""
    from vos.checkpoints import cache_dir
    from vos.config import available_models, load_config

    by_file: dict[str, list[str]] = {}
    for name in available_models():
        by_file.setdefault(load_config(name).checkpoint.filename, []).append(name)
    folder = cache_dir()
    files = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    return [(p.name, ", ".join(by_file.get(p.name, [])) or "?", p.stat().st_size >> 20) for p in files]


def recommend(native_bf16: bool, openvino: bool, cuda: str | None = None) -> Recommendation:
    """The model, runtime and precision for live tracking, from the measurements in docs/benchmarks.md."""
    track = f"vos track SOURCE --config {LIVE_MODEL} --image-size {LIVE_SIZE} --point 1=X,Y --out out/"
    download = f"vos checkpoints download {LIVE_MODEL}"
    if cuda:
        return Recommendation(
            LIVE_MODEL, "pytorch", "fp32", "cuda",
            f"a CUDA GPU ({cuda}): PyTorch; at 512 px fp32 was faster than bf16 on an H100 (SAM 2.1-T; EdgeTAM, the "
            "fastest model on every CPU measured, was not measured on a GPU)",
            [download, f"{track} --device cuda"],
        )  # fmt: skip
    if native_bf16 and openvino:
        return Recommendation(
            LIVE_MODEL, "openvino", "bf16", "cpu",
            "native bf16 and OpenVINO: EdgeTAM on OpenVINO bf16 ran 13.5 frames/s (512 px, 1 object) on a 2-core "
            "Xeon with AMX, 2.1x PyTorch fp32",
            [download, f"vos export onnx {LIVE_MODEL} --image-size {LIVE_SIZE} --out {ONNX_DIR}",
             f"{track} --backend openvino --onnx-dir {ONNX_DIR} --precision bf16"],
        )  # fmt: skip
    if native_bf16:
        return Recommendation(
            LIVE_MODEL, "pytorch", "bf16", "cpu",
            "native bf16 without OpenVINO: PyTorch bf16 ran 1.3x PyTorch fp32 with EdgeTAM on a 2-core Xeon with AMX "
            "(pip install 'vos[onnx,openvino]' for OpenVINO bf16, 2.1x)",
            [download, f"{track} --precision bf16"],
        )  # fmt: skip
    return Recommendation(
        LIVE_MODEL, "pytorch", "fp32", "cpu",
        "no native bf16 (emulated bf16 is slower than fp32): PyTorch fp32; OpenVINO fp32 (0.83-1.12x) and ONNX "
        "Runtime fp32 (0.73-0.93x) were no faster in the runs measured",
        [download, track],
    )  # fmt: skip


def report() -> tuple[str, int]:
    """The text `vos doctor` prints and its exit code: 1 when torch or another core requirement is missing."""
    lines: list[str] = []
    name, flags = cpu_info()
    groups = requirements()
    core_missing = [p for p in groups["core"] if not p.ok]
    torch_version = installed("torch")

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines.append("machine")
    lines.append(f"  CPU: {name}; {os.cpu_count()} logical cores, {usable} usable by this process")
    lines.append(f"  instruction sets: {', '.join(flags) or 'none of ' + ', '.join(CPU_FLAGS)}")
    native = cuda = None
    if torch_version:
        import torch

        native = cpu_native_bf16()
        cuda = cuda_device()
        lines.append(f"  native bf16 on the CPU: {'yes' if native else 'no (bf16 would be emulated: slower than fp32)'}")
        lines.append(f"  torch {torch.__version__}: {torch.get_num_threads()} threads, CPU kernels "
                     f"{torch.backends.cpu.get_cpu_capability()}, CUDA {torch.version.cuda or 'none (CPU build)'}"
                     f"{f', GPU {cuda}' if cuda else ''}")  # fmt: skip
    else:
        lines.append("  torch: not installed")

    lines.append("packages (vos's requirements and extras)")
    for group, packages in groups.items():
        missing = [p for p in packages if not p.ok]
        label = "core" if group == "core" else f"vos[{group}]"
        if missing:
            have = ", ".join(f"{p.wanted} (have {p.version})" if p.version else p.wanted for p in missing)
            lines.append(f"  {label}: missing {have}")
        else:
            lines.append(f"  {label}: " + ", ".join(f"{p.name} {p.version}" for p in packages))
    for tool, path in tools().items():
        lines.append(f"  {tool}: {path or 'not found'}")

    lines.append("checkpoints")
    if torch_version:
        from vos.checkpoints import cache_dir

        cached = cached_checkpoints()
        lines.append(f"  cache: {cache_dir()}" + ("" if cached else " (empty: vos checkpoints download NAME)"))
        lines.extend(f"  {file}: {models}, {size} MB" for file, models, size in cached)
    else:
        lines.append("  (needs torch)")

    if core_missing:
        lines.append("problems")
        lines.append("  vos needs " + ", ".join(p.wanted for p in core_missing)
                     + ": pip install -e . (or bash scripts/install-dev.sh)")  # fmt: skip
        return "\n".join(lines) + "\n", 1
    openvino = all(p.ok for p in groups.get("openvino", [])) and installed("openvino") is not None
    pick = recommend(bool(native), openvino, cuda)
    lines.append("recommended for live tracking here")
    lines.append(f"  model {pick.model}, backend {pick.backend}, precision {pick.precision}, device {pick.device}")
    lines.append(f"  why: {pick.why}")
    lines.extend(f"  $ {command}" for command in pick.commands)
    return "\n".join(lines) + "\n", 0
