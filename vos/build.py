"""Building a model from a config name and a checkpoint."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from vos.checkpoints import (
    OBJECT_SCORE_BIAS_OFFSET,
    RANDOM_WEIGHTS_KEY,
    load_weights,
    matching_configs,
    pick_config,
    read_state_dict,
    resolve_checkpoint,
)
from vos.config import (
    DEFAULT_CONFIG,
    DEFAULT_PRECISION,
    Backend,
    ModelConfig,
    ModelSettings,
    Precision,
    available_models,
    check_backend,
    load_config,
)
from vos.device import check_device, resolve_precision, set_threads
from vos.errors import CheckpointError, ConfigError
from vos.modeling.sam2 import SAM2Model

log = logging.getLogger(__name__)


def build_model(config: str | Path | ModelConfig, image_size: int | None = None) -> SAM2Model:
    """A model with freshly initialized (untrained) weights."""
    cfg = config if isinstance(config, ModelConfig) else load_config(config, image_size=image_size)
    if image_size is not None and cfg.image_size != image_size:
        cfg = ModelConfig.model_validate({**cfg.model_dump(), "image_size": image_size})
    return SAM2Model(cfg)


def random_weights_name(config: str) -> str:
    """The file name `save_random_checkpoint` gives `config`'s random weights: it says what they are, and starts
    with the config's name so that loading picks that config."""
    return f"{config}-random-untrained.pt"


def random_weights_path(config: str, out: str | Path | None = None) -> Path:
    """Where `save_random_checkpoint` writes: `out` if it names a file (it has a suffix: NAME.pt), else
    `random_weights_name(config)` in the folder `out` (an existing one, one written with a trailing slash, or a
    name without a suffix; made if missing); default the current folder."""
    if out is None:
        return Path.cwd() / random_weights_name(config)
    folder = str(out).endswith(("/", os.sep)) or Path(out).is_dir() or not Path(out).suffix
    return Path(out) / random_weights_name(config) if folder else Path(out)


def save_random_checkpoint(config: str, out: str | Path | None = None, seed: int = 0) -> Path:
    """Random, untrained weights of `config` in the official checkpoint format (`{"model": state_dict}`), with the
    object-score bias shifted by OBJECT_SCORE_BIAS_OFFSET so that prompted objects are kept as present: a model
    that runs everything offline (demos, tests, pipelines) but whose masks follow no object. Loading it warns.
    `out`: see `random_weights_path`."""
    cfg = load_config(config)
    path = random_weights_path(cfg.name, out)
    torch.manual_seed(seed)
    state_dict = build_model(cfg).state_dict()
    bias = [k for k in state_dict if k.startswith("sam_mask_decoder.pred_obj_score_head.") and k.endswith(".bias")]
    if bias:  # the head's last layer: "...pred_obj_score_head.bias" or "...layers.2.bias"
        state_dict[max(bias)] += OBJECT_SCORE_BIAS_OFFSET
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state_dict, RANDOM_WEIGHTS_KEY: {"config": cfg.name, "seed": seed}}, path)
    return path


def load_model(
    config: str | Path | ModelConfig | None = None,
    checkpoint: str | Path | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
    precision: Precision = DEFAULT_PRECISION,
    fuse: bool = True,
    backend: Backend = "pytorch",
    onnx_dir: str | Path | None = None,
    calibrate: str | Path | None = None,
) -> SAM2Model:
    """Build `config` (a name such as "sam2.1_hiera_t", or a YAML path) and load its weights strictly.

    Without `config`, the shipped config the checkpoint's keys and shapes fit is used (`pick_config` where several
    do; the SAM 2.1 tiny model when no checkpoint is given either). Without `checkpoint`, the cached
    download is used, fetched from Meta on first use when `download` is true. `image_size`
    (1024 or 512) overrides the config's. `precision` ("fp32", "bf16" or "auto", see
    `vos.device`) is what trackers and predictors built on the model run in; bf16 stores the
    linear and convolution weights in bfloat16 (`SAM2Model.set_precision`). `fuse` folds batch norms
    and parallel branches into single convolutions after loading (`SAM2Model.fuse`; EdgeTAM's RepViT).

    `backend="onnxruntime"`: trackers on the model run the graphs `vos export onnx` wrote to `onnx_dir` for this
    config, image size and checkpoint (`vos.tracking.onnx_stages`); the model itself stays fp32, and `precision` is
    the graphs' ("fp32" or "int8"; "auto": whichever they are). `backend="auto"`: the same, but each stage runs
    on the fastest of ONNX Runtime and OpenVINO (where installed, fp32 graphs on a CPU) only where it ran faster
    than PyTorch at load (`vos.export.stage_timing`: seconds at 512 px, half a minute at 1024 on two cores), else
    on the model's PyTorch modules. `backend="openvino"`: the same graphs
    compiled by OpenVINO on the CPU (`vos.export.openvino_runtime`), computing in `precision` "fp32", "bf16" (CPUs
    with native bf16), "int8" (the image encoder statically quantized, calibrated on the frames of the folder
    `calibrate`, default those shipped with vos: `vos.export.quantize`) or "auto" (bf16 where native); its compiled
    and quantized models are cached for the next start.
    """
    if calibrate is not None and not (backend == "openvino" and precision == "int8"):
        raise ConfigError("calibrate (--calibrate DIR) is for backend openvino with precision int8: give both, or drop it")
    try:
        check_backend(backend, onnx_dir)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    dev = check_device(device)
    chosen = resolve_precision(precision, dev) if backend == "pytorch" else "fp32"
    state_dict = None
    if config is None and checkpoint is not None:
        state_dict = read_state_dict(checkpoint)
        fits = matching_configs(state_dict)
        if not fits:
            raise CheckpointError(
                f"checkpoint {checkpoint} fits none of the shipped configs ({', '.join(available_models())}); "
                "name its config with --config"
            )
        config = pick_config(fits, checkpoint, image_size)
    model = build_model(config or DEFAULT_CONFIG, image_size=image_size)
    weights = resolve_checkpoint(model.cfg, checkpoint, download=download)
    load_weights(model, weights, state_dict)
    model = model.to(dev).eval()
    if fuse:
        model.fuse()
    model.set_precision(chosen)
    if backend != "pytorch":
        manifest = _paired_manifest(model, Path(onnx_dir), weights)
        if backend == "openvino":
            graphs = _openvino_graphs(Path(onnx_dir), manifest, precision, str(dev), calibrate)
        elif backend == "auto":
            graphs = _fastest_graphs(model, Path(onnx_dir), manifest, precision, str(dev))
        else:
            graphs = _onnx_graphs(Path(onnx_dir), manifest, precision, str(dev))
        model.onnx_graphs = graphs if graphs.used else None
    return model


def _fastest_graphs(model: SAM2Model, folder: Path, manifest, precision: Precision, device: str):
    """Each stage on the runtime that ran it fastest here (`vos.export.stage_timing`): PyTorch, ONNX Runtime or,
    where installed and the graphs are fp32 on a CPU, OpenVINO (bf16 where native unless `precision` says fp32);
    logged with the times."""
    from vos.export.stage_timing import ChosenGraphs, fastest, measure

    runtimes = {"ONNX Runtime": _onnx_graphs(folder, manifest, precision, device)}
    if device == "cpu" and manifest.precision == "fp32" and importlib.util.find_spec("openvino") is not None:
        runtimes["OpenVINO"] = _openvino_graphs(folder, manifest, "fp32" if precision == "fp32" else "auto", device)
    times = measure(model, *runtimes.values())
    chosen = fastest(times, set(manifest.graphs))
    names, graphs = list(runtimes), list(runtimes.values())
    table = ", ".join(f"{stage} {' / '.join(f'{t * 1e3:.0f}' for t in ts)} ms" for stage, ts in times.items())
    picks = ", ".join(f"{stage}: {names[k - 1]}" for stage, k in sorted(chosen.items())) or "nothing"
    log.info("backend auto: PyTorch / %s per stage: %s; graphs run: %s", " / ".join(names), table, picks)
    return ChosenGraphs({stage: (names[k - 1], graphs[k - 1]) for stage, k in chosen.items()})


def _paired_manifest(model: SAM2Model, folder: Path, weights: Path | None):
    """The manifest of the export `folder`, checked to be of `model`'s config, image size and weights."""
    from vos.checkpoints import file_sha256
    from vos.export.onnx import read_manifest

    manifest = read_manifest(folder, model.cfg.name, model.image_size)
    manifest.check_weights(model.cfg.model_dump(mode="json"), file_sha256(weights) if weights is not None else None)
    return manifest


def _openvino_graphs(folder: Path, manifest, precision: Precision, device: str, calibrate: str | Path | None = None):
    """OpenVINO's compiled models of `folder`, computing in `precision` (fp32, bf16, int8 or auto)."""
    from vos.export.openvino_runtime import OpenVinoGraphs

    if device != "cpu":
        raise ConfigError(f"the openvino backend runs on the CPU, not {device}: give --device cpu")
    calibrate = Path(calibrate) if calibrate is not None else None
    return OpenVinoGraphs(folder, manifest, precision, threads=torch.get_num_threads(), calibrate=calibrate)


def _onnx_graphs(folder: Path, manifest, precision: Precision, device: str):
    """The ONNX Runtime sessions of `folder`, whose graphs must be of `precision` (or auto)."""
    from vos.export.runtime import OnnxGraphs

    if precision not in ("auto", manifest.precision):
        given = "auto" if manifest.precision == "fp16" else f"{manifest.precision} (or auto)"
        again = f", or export the model again with --precision {precision}" if precision in ("fp32", "int8") else ""
        raise ConfigError(
            f"the ONNX graphs in {folder} are {manifest.precision}, not {precision}: give precision {given}{again}"
        )
    return OnnxGraphs(folder, manifest, device, threads=torch.get_num_threads())


def load_from_settings(settings: ModelSettings) -> SAM2Model:
    """Sets the thread count and loads the model `settings` describe (blocking; minutes for a large one)."""
    set_threads(settings.threads)
    return load_model(
        settings.config, checkpoint=settings.checkpoint, image_size=settings.image_size, device=settings.device,
        precision=settings.precision, backend=settings.backend, onnx_dir=settings.onnx_dir,
        calibrate=settings.calibrate,
    )  # fmt: skip
