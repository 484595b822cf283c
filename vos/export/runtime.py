"""ONNX Runtime sessions over a folder written by `vos export onnx`: each graph run on numpy arrays.

What the ONNX Runtime tracker backend runs (`vos.load_model(backend="onnxruntime")`,
`vos.tracking.onnx_stages`); the folder's manifest says which model, image size and checkpoint the graphs are of,
and `check_pairs` refuses graphs of other weights than the model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vos.errors import ConfigError
from vos.export.onnx import OnnxManifest, read_manifest, require_extra


def providers(device: str) -> list:
    """ONNX Runtime's execution providers for a torch device name: "cpu", "cuda" or "cuda:N"."""
    ort = require_extra("onnxruntime")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.split(":")[0] != "cuda":
        raise ConfigError(f"the onnxruntime backend runs on cpu or cuda, not {device}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ConfigError(
            "this ONNX Runtime has no CUDA provider: pip install onnxruntime-gpu (in place of onnxruntime), "
            "or run with --device cpu"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


class OnnxGraphs:
    """One ONNX Runtime session per graph of an export folder; `run` takes and gives numpy arrays."""

    def __init__(self, folder: Path, manifest: OnnxManifest, device: str = "cpu", threads: int | None = None) -> None:
        ort = require_extra("onnxruntime")
        if manifest.precision == "fp16" and device == "cpu":
            raise ConfigError(
                f"the ONNX graphs in {folder} are fp16, for GPUs (on a CPU they are no faster than fp32, and less "
                "exact): run them with --device cuda, or export fp32 or int8 graphs for a CPU"
            )
        self.folder = Path(folder)
        self.manifest = manifest
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        # Idle threads sleep rather than spin between calls: the PyTorch code between the graphs needs the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = providers(device)
        self._sessions = {}
        for name, graph in manifest.graphs.items():
            try:
                self._sessions[name] = ort.InferenceSession(
                    str(self.folder / graph.file), sess_options=options, providers=chosen
                )
            except Exception as e:  # ORT's own error types: a file that is not a graph, or of another opset
                raise ConfigError(
                    f"ONNX Runtime cannot load {self.folder / graph.file} ({e}): export the model again"
                ) from None
        self._outputs = {name: [t.name for t in graph.outputs] for name, graph in manifest.graphs.items()}
        self.used = frozenset(manifest.graphs)  # the graphs trackers run; PyTorch runs the others' stages

    @classmethod
    def open(
        cls, folder: Path, model: str | None = None, image_size: int | None = None, device: str = "cpu",
        threads: int | None = None,
    ) -> OnnxGraphs:  # fmt: skip
        """The graphs of `folder`, checked to be of `model` at `image_size` when given."""
        return cls(folder, read_manifest(folder, model, image_size), device, threads)

    @property
    def precision(self) -> str:
        return self.manifest.precision

    def has(self, graph: str) -> bool:
        return graph in self._sessions

    def run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs, in the manifest's order, for named inputs (C-contiguous float32 / int32 / int64)."""
        return self._sessions[graph].run(self._outputs[graph], inputs)
