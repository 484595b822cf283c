"""OpenVINO compiled models over a folder written by `vos export onnx`: each graph run on numpy arrays.

What the OpenVINO tracker backend runs (`vos.load_model(backend="openvino")`, through the same stages as ONNX
Runtime: `vos.tracking.onnx_stages`); the folder is checked as for ONNX Runtime (`vos.build`). OpenVINO is the
CPU runtime of camera-analytics deployments, on Intel and AMD CPUs alike.

- Precision: "fp32", or "bf16" (OpenVINO's inference precision hint: weights and activations in bfloat16
  inside the graphs, float32 in and out; the decoder stays fp32, `FP32_GRAPHS`) on CPUs with native bf16
  (AVX-512 BF16, AMX); refused elsewhere, where it would only be emulated. "int8": the image encoder statically
  quantized by NNCF, calibrated on frames (`vos.export.quantize`), the other graphs in fp32: for CPUs without
  native bf16. "auto": bf16 where native, else fp32. The graphs must be fp32 ones.
- Compiled fp32 models are cached (OpenVINO's model cache, keyed by the graph file and the compile settings, in
  `$VOS_CACHE_DIR/openvino` or `~/.cache/vos/openvino`), so a second start loads them instead of compiling
  (`CACHED_PRECISIONS`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from vos.checkpoints import CACHE_ENV
from vos.errors import ConfigError
from vos.export.onnx import OnnxManifest, require_extra
from vos.export.quantize import INT8_GRAPHS, quantized_graph

CACHE_SUBDIR = "openvino"
BROADCAST_INPUTS = {"memory_encoder": ("image_embed",)}
"""Inputs of one frame (batch 1) that the graph broadcasts over the objects, given to OpenVINO already broadcast:
its CPU plugin (2026.4) fails on the memory encoder's broadcast add for more than one object ("Can not clone with
new dims")."""
PRECISIONS = ("fp32", "bf16", "int8", "auto")
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the quantized graphs' other operations in fp32
FP32_GRAPHS = ("mask_decoder",)
"""Graphs computed in fp32 under bf16: EdgeTAM's decoder in bf16 lost its object (logits r -0.31, mask IoU 0.23
against fp32 over 16 frames, where each other graph alone in bf16 kept r >= 0.985, IoU >= 0.996); it is a tenth of
a frame's time."""
CACHED_PRECISIONS = ("fp32",)
"""Compiled models cached on disk. Not bf16: with OpenVINO 2026.4, compiling the bf16 graphs in a process that had
read fp32 ones from the cache corrupted memory (segmentation faults in the mask decoder); compiling them takes
seconds."""


def openvino_cache_dir() -> Path:
    """Where compiled models are cached: beside the checkpoints' cache ($VOS_CACHE_DIR) or ~/.cache/vos/openvino."""
    env = os.environ.get(CACHE_ENV)
    return (Path(env) if env else Path.home() / ".cache" / "vos") / CACHE_SUBDIR


@functools.cache
def openvino_core():
    """The process's OpenVINO runtime (one, as OpenVINO advises: compiled models of several cores crashed here)."""
    return require_extra("openvino", extra="openvino").Core()


def native_bf16(core) -> bool:
    """Whether OpenVINO computes bf16 natively on this CPU (AVX-512 BF16 or AMX)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_openvino_precision(precision: str, core) -> str:
    """"fp32" or "bf16" for a requested precision; ConfigError for one OpenVINO does not run here."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"the openvino backend computes in {', '.join(PRECISIONS)}, not {precision}: give --precision fp32, "
            "bf16 (CPUs with AVX-512 BF16 or AMX), int8 (static, calibrated on frames) or auto"
        )
    if precision == "auto":
        return "bf16" if native_bf16(core) else "fp32"
    if precision == "bf16" and not native_bf16(core):
        raise ConfigError(
            "this CPU has no native bf16 (AVX-512 BF16 or AMX): OpenVINO would only emulate it, slower than fp32; "
            "give --precision fp32 (or auto)"
        )
    return precision


class OpenVinoGraphs:
    """One OpenVINO compiled model (and infer request) per graph of an export folder; `run` takes and gives numpy
    arrays, as `vos.export.runtime.OnnxGraphs` does."""

    def __init__(
        self, folder: Path, manifest: OnnxManifest, precision: str = "fp32", threads: int | None = None,
        cache_dir: Path | None = None, calibrate: Path | None = None,
    ) -> None:  # fmt: skip
        core = openvino_core()
        if manifest.precision != "fp32":
            raise ConfigError(
                f"the ONNX graphs in {folder} are {manifest.precision}; OpenVINO runs fp32 graphs (in fp32, or bf16 "
                "with --precision bf16): export the model again with --precision fp32"
            )
        self.folder = Path(folder)
        self.manifest = manifest
        self.compute_precision = resolve_openvino_precision(precision, core)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else openvino_cache_dir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.compute_precision in CACHED_PRECISIONS:
            config["CACHE_DIR"] = str(self.cache_dir)
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        self._requests = {}
        self._outputs: dict[str, list] = {}
        self.calibrate = calibrate
        for name, graph in manifest.graphs.items():
            hint = _HINTS["fp32" if name in FP32_GRAPHS else self.compute_precision]
            try:
                compiled = core.compile_model(
                    self._read(core, name, graph.file), "CPU", {**config, "INFERENCE_PRECISION_HINT": hint}
                )
            except RuntimeError as e:  # OpenVINO's error for a file it cannot read as a graph
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConfigError(f"OpenVINO cannot load {self.folder / graph.file} ({first}): export the model again") from None
            self._requests[name] = compiled.create_infer_request()
            by_name = {tensor: port for port in compiled.outputs for tensor in port.get_names()}
            self._outputs[name] = [by_name[t.name] for t in graph.outputs]
        self.used = frozenset(manifest.graphs)  # the graphs trackers run; PyTorch runs the others' stages

    def _read(self, core, name: str, file: str):
        """The graph (statically quantized under int8, `INT8_GRAPHS`), its `BROADCAST_INPUTS` taking any batch."""
        ov = require_extra("openvino", extra="openvino")
        if self.compute_precision == "int8" and name in INT8_GRAPHS:
            graph = quantized_graph(core, self.folder / file, self.manifest.image_size, self.cache_dir, self.calibrate)
        else:
            graph = core.read_model(str(self.folder / file))
        inputs = {port.get_any_name(): port for port in graph.inputs}
        reshaped = {}
        for input_name in BROADCAST_INPUTS.get(name, ()):
            shape = inputs[input_name].get_partial_shape()
            reshaped[input_name] = ov.PartialShape([-1, *list(shape)[1:]])
        if reshaped:
            graph.reshape(reshaped)
        return graph

    @property
    def precision(self) -> str:
        return self.manifest.precision

    def has(self, graph: str) -> bool:
        return graph in self._requests

    def run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs, in the manifest's order, for named inputs; copies (the request reuses its buffers)."""
        request = self._requests[graph]
        broadcast = BROADCAST_INPUTS.get(graph, ())
        if broadcast:
            objects = max(len(v) for k, v in inputs.items() if k not in broadcast)
            inputs = {k: np.ascontiguousarray(np.broadcast_to(v, (objects, *v.shape[1:]))) if k in broadcast else v
                      for k, v in inputs.items()}  # fmt: skip
        request.infer(inputs)
        return [np.array(request.get_tensor(port).data, copy=True) for port in self._outputs[graph]]
