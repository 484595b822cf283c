"""Speed plots for the documentation, drawn from the raw outputs in benchmarks/results/: frames/s per model and
runtime at 512 px with one object, one plot per CPU kind, each bar from the latest file that measured it.

    python benchmarks/plot_speed.py [--out docs/img]

Reads the outputs of bench_efficient.py, bench_speed.py and bench_onnx_tracker.py (GPU runs are left out).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent

CPU_LINE = re.compile(r"(?:CPU|machine): ([^;]+); ([a-z0-9_, ]+?);")
SECTION = re.compile(r"^(?:(\S+), )?(\d+) px, (\d+) object\(s\)(?:.*EfficientTAM: (\S+))?")
EFFICIENT_ROW = re.compile(r"^\s+((?:meta|vos) \S+(?: openvino)? (?:fp32|bf16|int8)|\S+ reference fp32)\s+([\d.]+)\s+[\d.]+\s")
SPEED_ROW = re.compile(r"^\s+(meta fp32|vos fp32|vos bf16)\s+([\d.]+)\s+[\d.]+x")
TRACKER_ROW = re.compile(r"^(PyTorch eager|PyTorch bf16|ORT fp32|ORT int8|OpenVINO fp32|OpenVINO int8|OpenVINO bf16)\s+([\d.]+) s/frame")
MODELS = {
    "sam2.1_t": "SAM 2.1-T", "sam2.1_hiera_t": "SAM 2.1-T", "edgetam": "EdgeTAM", "efficienttam_ti": "EfficientTAM-Ti",
    "efficienttam_ti_512x512": "EfficientTAM-Ti", "efficienttam_ti_1": "EfficientTAM-Ti_1", "efficienttam_ti_2": "EfficientTAM-Ti_2",
}  # fmt: skip
RUNTIMES = {"PyTorch eager": "PyTorch fp32", "ORT fp32": "ONNX Runtime fp32", "ORT int8": "ONNX Runtime int8"}


@dataclass(frozen=True)
class Measure:
    cpu_kind: str
    model: str
    runtime: str
    frames_per_s: float
    source: str


def cpu_kind(name: str, flags: str) -> str:
    vendor = "Intel Xeon" if "Intel" in name else "AMD EPYC" if "AMD" in name else name.strip()
    flags = {f.strip() for f in flags.split(",")}
    if any(f.startswith("amx") for f in flags):
        return f"{vendor} with AMX"
    if "avx512_bf16" in flags:
        return f"{vendor} with AVX-512 BF16"
    if "avx512f" in flags:
        return f"{vendor} with AVX-512, no native bf16"
    return f"{vendor}, AVX2 only"


def _row(line: str, model: str | None, efficienttam: str | None) -> tuple[str, str, float] | None:
    """(model, runtime, s/frame) of a result line of any of the three benchmarks."""
    if m := EFFICIENT_ROW.match(line):
        words = m.group(1).split()
        name = MODELS[efficienttam or "efficienttam_ti"] if words[words[0] in ("meta", "vos")] == "efficienttam" else None
        if words[1] == "reference":
            return name or MODELS[words[0]], "reference code fp32", float(m.group(2))
        who = "Meta's code" if words[0] == "meta" else "OpenVINO" if "openvino" in words else "PyTorch"
        return name or MODELS[words[1]], f"{who} {words[-1]}", float(m.group(2))
    if (m := SPEED_ROW.match(line)) and model is None:
        who, precision = m.group(1).split()
        return "SAM 2.1-T", f"{'Meta' + chr(39) + 's code' if who == 'meta' else 'PyTorch'} {precision}", float(m.group(2))
    if (m := TRACKER_ROW.match(line)) and model is not None:
        return MODELS.get(model, model), RUNTIMES.get(m.group(1), m.group(1)), float(m.group(2))
    return None


def read_results(folder: Path = RESULTS) -> list[Measure]:
    """Every 512 px, one-object measurement on a CPU in `folder`."""
    found = []
    for path in sorted(folder.glob("*.txt")):
        kind = model = efficienttam = None
        size = objects = 0
        for line in path.read_text(errors="replace").splitlines():
            if "cuda" in line and ("torch" in line or "native bf16" in line):
                break  # a GPU run
            if m := CPU_LINE.search(line):
                kind = cpu_kind(*m.groups())
            elif m := SECTION.match(line):
                model, size, objects, efficienttam = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
            elif kind and size == 512 and objects == 1 and (row := _row(line, model, efficienttam)):
                found.append(Measure(kind, row[0], row[1], round(1 / row[2], 2), path.name))
    return found


def latest(measures: list[Measure]) -> dict[str, list[Measure]]:
    """Per CPU kind, the latest measurement of each model and runtime (files sort by date)."""
    by_kind: dict[str, dict[tuple[str, str], Measure]] = {}
    for m in sorted(measures, key=lambda m: m.source):
        by_kind.setdefault(m.cpu_kind, {})[(m.model, m.runtime)] = m
    return {kind: sorted(runs.values(), key=lambda m: (m.model, m.frames_per_s)) for kind, runs in by_kind.items()}


def slug(kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


def plot(kind: str, measures: list[Measure], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"EdgeTAM": "#1f77b4", "EfficientTAM": "#2ca02c", "SAM 2.1-T": "#d62728"}
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(measures) + 1.3), dpi=90)
    labels = [f"{m.model}: {m.runtime}" for m in measures]
    values = [m.frames_per_s for m in measures]
    ax.barh(labels, values, color=[next((c for k, c in colours.items() if m.model.startswith(k)), "#7f7f7f") for m in measures])
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.1f}", va="center", fontsize=8)
    ax.set_xlabel("frames/s, 512 px, 1 object (2 cores)")
    ax.set_title(kind, fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlim(0, max(values) * 1.15)
    sources = sorted({m.source for m in measures})
    fig.text(0.01, 0.005, "benchmarks/results/: " + ", ".join(s.removesuffix(".txt") for s in sources), fontsize=5.5)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = out / f"speed-{slug(kind)}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for kind, measures in latest(read_results()).items():
        path = plot(kind, measures, args.out)
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {len(measures)} runs")


if __name__ == "__main__":
    main()
