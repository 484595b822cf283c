"""Each graph of `vos export onnx` in ONNX Runtime (fp32 and int8) vs the PyTorch code the tracker runs for the same
stage, side by side in one process on the same inputs, runs alternating call by call.

Stages of one tracked frame as `backend="auto"` measures them (`vos.export.stage_timing.stage_calls`): the image
encoder (one image), memory attention at steady state (a full bank: 7 memory frames, 16 object pointers; PyTorch
reads each frame's keys projected once, ONNX Runtime projects them in the graph on every call), the mask decoder
without prompts, and the memory encoder; B objects. Random SAM 2.1-T weights, fused as `vos.load_model` fuses them
(speed does not depend on the weights). Prints the median seconds per call and the ratio to PyTorch, with the
machine.

    python benchmarks/bench_onnx.py                           # 512 px, 1 object
    python benchmarks/bench_onnx.py --image-size 1024 --objects 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_speed import cpu_description, gemm_rate, timed  # noqa: E402

from vos.build import build_model  # noqa: E402
from vos.export.onnx import OnnxExportSettings, export_onnx  # noqa: E402
from vos.export.stage_timing import stage_calls  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--onnx-dir", type=Path, help="reuse an export of random SAM 2.1-T weights at this size")
    args = parser.parse_args()
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model("sam2.1_hiera_t", image_size=args.image_size).eval()
    model.fuse()  # as `vos.load_model` loads it
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"fp32": args.onnx_dir or Path(tmp) / "fp32", "int8": Path(tmp) / "int8"}
        for precision, folder in folders.items():
            if not (folder / "manifest.json").is_file():
                export_onnx(model, folder, OnnxExportSettings(precision=precision))
        threads = torch.get_num_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        sessions = {
            (p, name): ort.InferenceSession(str(f / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
            for p, f in folders.items()
            for name in ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
        }
        gemm = gemm_rate(torch.float32, "cpu")
        print(f"machine: {cpu_description()}; {threads} threads; fp32 GEMM {gemm:.0f} GFLOP/s")
        print(f"SAM 2.1-T, {args.image_size} px, {args.objects} object(s); median of {args.repeats} calls, 2 warm-up")
        for graph, (torch_call, feeds) in stage_calls(model, args.objects).items():
            calls = {
                "PyTorch eager": torch_call,
                "ORT fp32": lambda g=graph: sessions[("fp32", g)].run(None, feeds),
                "ORT int8": lambda g=graph: sessions[("int8", g)].run(None, feeds),
            }
            times = {k: [] for k in calls}
            with torch.inference_mode():
                for i in range(args.repeats + 2):
                    for name, call in calls.items():
                        _, seconds = timed(call, "cpu")
                        if i >= 2:
                            times[name].append(seconds)
            base = statistics.median(times["PyTorch eager"])
            medians = {k: statistics.median(v) for k, v in times.items()}
            cells = [f"{k} {m * 1e3:7.1f} ms ({base / m:.2f}x)" for k, m in medians.items()]
            print(f"{graph:17s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
