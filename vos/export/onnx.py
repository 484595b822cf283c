"""`vos export onnx`: the model's graphs (`vos.export.graphs`) as ONNX files with a manifest.

A folder holds one model at one image size: a `.onnx` file per graph and `manifest.json`, which names the model,
its config, the image size, the checkpoint's SHA-256 and each graph's inputs and outputs (names, shapes with the
variable axes named, dtypes). Every file passes `onnx.checker`; with `simplify`, a graph is slimmed by onnxslim
and kept slimmed only where ONNX Runtime gives the same outputs as before (within `SIMPLIFY_TOLERANCE`). int8
quantizes the weights of the matrix products of the heavy graphs (`QUANTIZED`; ONNX Runtime's dynamic quantization).
fp16 computes in float16 inside every graph, for GPUs, with float32 inputs and outputs, so that callers feed the
same arrays at every precision.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vos.config import checked
from vos.errors import ConfigError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SIMPLIFY_TOLERANCE = 1e-5  # largest output change a simplification may make, relative to the output's scale
FP16_TOLERANCE = 2e-2  # largest output change float16 may make on the example inputs, relative to the output's scale
DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16"}
QUANTIZED = frozenset({"image_encoder", "memory_attention", "memory_attention_pooled"})
"""The graphs int8 quantizes. The decoder and memory encoder stay fp32: quantized, they ran no faster (2-core Xeon,
SAM 2.1-T) and the decoder's object scores drifted until EdgeTAM lost an object (Pearson r of the logits -0.28 against
fp32 over 16 frames; 0.9999 with these graphs alone quantized)."""


class OnnxExportSettings(BaseModel):
    """How `vos export onnx` writes the graphs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    opset: int = Field(18, ge=18, le=23, description="ONNX opset of the graphs")
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp32",
        description="fp32; fp16, for GPUs (float16 inside the graphs, float32 inputs and outputs); or int8, for CPUs: "
        "the weights of the image encoder's and memory attention's matrix products quantized (ONNX Runtime dynamic "
        "quantization)",
    )
    simplify: bool = Field(
        True, description="slim the graphs with onnxslim where that leaves ONNX Runtime's outputs the same"
    )


class TensorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: list[int | str]  # fixed sizes as numbers, variable axes by name ("objects", "frames", ...)
    dtype: str


class GraphInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    simplified: bool
    quantized: bool = False  # int8 weights (`QUANTIZED`)


class OnnxManifest(BaseModel):
    """What `manifest.json` records about an exported model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = MANIFEST_FORMAT
    vos_version: str
    model: str  # the config's name
    image_size: int
    checkpoint_sha256: str | None  # None: the model's weights came from no file
    opset: int
    precision: Literal["fp32", "fp16", "int8"]
    config: dict[str, Any]  # the full model config (`vos.config.ModelConfig`)
    graphs: dict[str, GraphInfo]
    # (C,) the learned pointer of an object judged absent (`SAM2Model.select_heads` blends pointers with it); None:
    # the model has none
    no_obj_ptr: list[float] | None = None

    def check_fits(self, model: str | None = None, image_size: int | None = None) -> None:
        """ConfigError unless these graphs are of `model` at `image_size` (None: any)."""
        if model is not None and model != self.model:
            raise ConfigError(
                f"these ONNX graphs are of model {self.model}, not {model}: export {model} to its own folder"
            )
        if image_size is not None and image_size != self.image_size:
            raise ConfigError(
                f"these ONNX graphs take {self.image_size}-px images, not {image_size}: export the model again with "
                f"--image-size {image_size}"
            )

    def check_weights(self, config: dict[str, Any], checkpoint_sha256: str | None) -> None:
        """ConfigError unless the graphs were exported from this model config and checkpoint (by SHA-256; when
        either side does not know its checkpoint, only the config is compared)."""
        if json.dumps(config, sort_keys=True) != json.dumps(self.config, sort_keys=True):
            raise ConfigError(
                f"these ONNX graphs were exported from another {self.model} config than the model's: export them "
                "again from this model"
            )
        recorded = self.checkpoint_sha256
        if recorded is not None and checkpoint_sha256 is not None and recorded != checkpoint_sha256:
            raise ConfigError(
                f"these ONNX graphs were exported from other weights (checkpoint SHA-256 {recorded[:12]}...) than "
                f"this checkpoint ({checkpoint_sha256[:12]}...): export them again with --checkpoint set to it"
            )


def read_manifest(folder: Path, model: str | None = None, image_size: int | None = None) -> OnnxManifest:
    """The manifest of an export folder, checked to be of `model` at `image_size` when given."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{folder} holds no {MANIFEST}: it is not a folder written by `vos export onnx`") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read as JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{path} is not a vos ONNX manifest of format {MANIFEST_FORMAT}: export the model again")
    manifest = OnnxManifest.model_validate(data)
    manifest.check_fits(model, image_size)
    for name, graph in manifest.graphs.items():
        if not (Path(folder) / graph.file).is_file():
            raise ConfigError(f"{folder}: the {name} graph's file {graph.file} is missing: export the model again")
    return manifest


def export_onnx(
    model,
    out: Path,
    settings: OnnxExportSettings | dict | None = None,
    checkpoint: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> OnnxManifest:
    """Write `model`'s graphs to the folder `out` (made if missing; files of an earlier export replaced).

    `checkpoint`: the file the weights came from, recorded by its SHA-256. `progress` is told each graph's name
    before it is exported (each takes seconds to a minute).
    """
    require_extra("onnx")

    from vos.checkpoints import file_sha256
    from vos.export.graphs import graph_specs

    if not isinstance(settings, OnnxExportSettings):  # a dict of its fields, or None
        settings = checked(OnnxExportSettings, "export settings", **(settings or {}))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for the graphs")
    out.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for spec in graph_specs(model.eval()):
        if progress is not None:
            progress(spec.name)
        graphs[spec.name] = write_graph(spec, out, settings)
    manifest = OnnxManifest(
        vos_version=_vos_version(), model=model.cfg.name, image_size=model.image_size,
        checkpoint_sha256=file_sha256(Path(checkpoint)) if checkpoint is not None else None, opset=settings.opset,
        precision=settings.precision, config=model.cfg.model_dump(mode="json"), graphs=graphs,
        no_obj_ptr=model.no_obj_ptr.detach().float().flatten().tolist() if hasattr(model, "no_obj_ptr") else None,
    )  # fmt: skip
    (out / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def write_graph(spec, out: Path, settings: OnnxExportSettings) -> GraphInfo:
    """Export one graph (`vos.export.graphs.GraphSpec`) to `out`/<name>.onnx: traced, slimmed and quantized as
    `settings` say, checked; what the manifest records of it."""
    onnx = require_extra("onnx")
    path = out / f"{spec.name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / path.name
        _export(spec, raw, settings.opset)
        simplified = settings.simplify and _simplify(raw, spec)
        quantized = settings.precision == "int8" and spec.name in QUANTIZED
        if quantized:
            _quantize(raw)
        if settings.precision == "fp16":
            _to_fp16(raw, spec)
        onnx.checker.check_model(str(raw), full_check=True)
        shutil.move(raw, path)
    graph = onnx.load(str(path), load_external_data=False).graph
    return GraphInfo(
        file=path.name, inputs=[_tensor_info(v) for v in graph.input], outputs=[_tensor_info(v) for v in graph.output],
        simplified=simplified, quantized=quantized,
    )  # fmt: skip


def _vos_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vos")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def require_extra(name: str, extra: str = "onnx"):
    """Import a module of an extra (`onnx`: export and the ONNX Runtime backend; `openvino`), or say how to install it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"vos's {extra} support needs {name}: pip install 'vos[{extra}]'") from None


def _export(spec, path: Path, opset: int) -> None:
    """Trace one graph to an ONNX file (torch's dynamo-based exporter; variable axes from `spec.dynamic`)."""
    import torch
    from torch.export import Dim

    dims: dict[str, Dim] = {}
    shapes = tuple(
        {axis: dims.setdefault(name, Dim(name, min=1, max=2**16)) for axis, name in spec.dynamic.get(i, {}).items()}
        or None
        for i in spec.inputs
    )
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # the exporter's notes on operators of packages vos does not use
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                spec.module, spec.example, dynamic_shapes=shapes, input_names=list(spec.inputs),
                output_names=list(spec.outputs), dynamo=True, opset_version=opset, verbose=False,
            )  # fmt: skip
    finally:
        torch_log.setLevel(level)
    program.save(str(path))


def run_graph(path: Path, spec) -> list[np.ndarray]:
    """ONNX Runtime's outputs of the graph file on `spec`'s example inputs (CPU)."""
    ort = require_extra("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(list(spec.outputs), {n: x.numpy() for n, x in zip(spec.inputs, spec.example)})


def _simplify(path: Path, spec) -> bool:
    """Slim the graph file in place if onnxslim leaves its outputs as they were; whether it did."""
    onnxslim = require_extra("onnxslim")
    before = run_graph(path, spec)
    slim = path.with_name("slim-" + path.name)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its table of operator counts
            onnxslim.slim(str(path), str(slim))
        kept = [v.name for v in require_extra("onnx").load(str(slim), load_external_data=False).graph.input]
        if kept != list(spec.inputs):  # it drops inputs a model does not use (SAM 2.0: pointer positions)
            log.info("%s: onnxslim would drop inputs; the graph stays as exported, inputs as documented", spec.name)
            return False
        after = run_graph(slim, spec)
    except Exception as e:  # a tool failing on a graph leaves the graph as exported
        log.warning("%s: onnxslim failed (%s); the graph stays as exported", spec.name, e)
        return False
    same = max(_drift(after, before), default=0.0) <= SIMPLIFY_TOLERANCE
    if same:
        slim.replace(path)
    else:
        log.warning("%s: onnxslim changed the outputs; the graph stays as exported", spec.name)
    return same


def _quantize(path: Path) -> None:
    """int8 weights for the matrix products (MatMul, Gemm), activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name("int8-" + path.name)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the graph (for static quantization) on every call
    try:
        quantize_dynamic(
            str(path), str(quantized), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
    finally:
        root.setLevel(level)
    quantized.replace(path)


def _to_fp16(path: Path, spec) -> None:
    """float16 inside the graph file (ONNX Runtime's converter; inputs and outputs stay float32), checked on `spec`'s
    example inputs to stay finite and within FP16_TOLERANCE of the float32 graph."""
    onnx = require_extra("onnx")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    before = run_graph(path, spec)
    onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(path))
    for name, drift in zip(spec.outputs, _drift(run_graph(path, spec), before)):
        if drift > FP16_TOLERANCE:
            raise ConfigError(
                f"the {spec.name} graph in float16 changes its output {name} beyond {FP16_TOLERANCE} of its scale: "
                "export fp32 graphs for this model"
            )


def _drift(after: list[np.ndarray], before: list[np.ndarray]) -> list[float]:
    """Per output, the largest change relative to the output's largest magnitude (at least 1); inf where the shape
    changed or a value is not finite."""
    return [
        float(np.abs(a - b).max(initial=0)) / max(1.0, float(np.abs(b).max(initial=0)))
        if a.shape == b.shape and np.isfinite(a).all() else float("inf")
        for a, b in zip(after, before)
    ]  # fmt: skip


def _tensor_info(value) -> TensorInfo:
    t = value.type.tensor_type
    shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
    return TensorInfo(name=value.name, shape=shape, dtype=DTYPES.get(t.elem_type, str(t.elem_type)))
