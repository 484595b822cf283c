"""Static int8 of exported graphs for OpenVINO: NNCF post-training quantization, calibrated on frames, cached.

On CPUs without native bf16 (AVX2, AVX-512 without BF16) int8 convolutions and matrix products are the lever that
ONNX Runtime's dynamic int8 (linear layers only) is not. The image encoder is quantized (`INT8_GRAPHS`), calibrated
on frames preprocessed as the tracker preprocesses them: the frames shipped with vos (`CALIBRATION_DIR`: DAVIS 2016
frames) or a folder of the user's own (`calibrate`). NNCF's result is deterministic for the same graph, frames and
NNCF version, so it is cached under that key (OpenVINO IR, `cache_dir/int8/KEY/`): a second start reads it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from vos.checkpoints import file_sha256
from vos.errors import ConfigError
from vos.export.onnx import require_extra
from vos.streams.sources.frame_folder import FRAME_EXTENSIONS, read_frame_file
from vos.tracking.transforms import preprocess_video_frame

CALIBRATION_DIR = Path(__file__).with_name("calibration")
CALIBRATION_FRAMES = 16  # frames used at most, evenly spaced over the folder's sorted files
INT8_GRAPHS = ("image_encoder",)
"""Graphs quantized under int8 (the others compute in fp32). The image encoder alone, with NNCF's transformer
scheme (its attention's softmax and normalizations left in float): on 4 held frames the features kept Pearson r >=
0.998 (EdgeTAM) and 0.9998 (SAM 2.1-T; 0.988 with NNCF's default scheme) against fp32."""
KEY_VERSION = "2"  # bumped when what is quantized, or how, changes


def calibration_paths(folder: Path | None = None) -> list[Path]:
    """Up to CALIBRATION_FRAMES image files of `folder` (default: the shipped frames), evenly spaced."""
    folder = Path(folder) if folder is not None else CALIBRATION_DIR
    if not folder.is_dir():
        raise ConfigError(f"--calibrate {folder} is not a folder: give a folder of frames (JPEG or PNG)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
    if not paths:
        raise ConfigError(f"--calibrate {folder} holds no JPEG or PNG frames to calibrate int8 on")
    step = max(1, len(paths) // CALIBRATION_FRAMES)
    return paths[::step][:CALIBRATION_FRAMES]


def calibration_images(paths: list[Path], image_size: int) -> list[np.ndarray]:
    """The image encoder's inputs (1, 3, S, S) float32 for these frames, as the tracker preprocesses them."""
    images = []
    for path in paths:
        try:
            frame = read_frame_file(path)
        except ValueError as e:
            raise ConfigError(f"cannot read the calibration frame: {e}") from None
        images.append(preprocess_video_frame(frame, image_size).numpy())
    return images


def quantization_key(graph_file: Path, paths: list[Path]) -> str:
    """What the int8 graph depends on: the graph file, the calibration frames, NNCF's version, KEY_VERSION."""
    nncf = require_extra("nncf", extra="openvino")
    parts = [KEY_VERSION, nncf.__version__, *(file_sha256(p) for p in [graph_file, *paths])]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:20]


def quantized_graph(core, graph_file: Path, image_size: int, cache_dir: Path, calibrate: Path | None = None):
    """The image encoder graph `graph_file` statically quantized to int8 (an `openvino.Model`), from the cache or
    quantized now (seconds) and cached."""
    ov = require_extra("openvino", extra="openvino")
    paths = calibration_paths(calibrate)
    cached = cache_dir / "int8" / quantization_key(graph_file, paths) / f"{graph_file.stem}.xml"
    if cached.is_file():
        return core.read_model(str(cached))
    nncf = require_extra("nncf", extra="openvino")
    samples = calibration_images(paths, image_size)
    model = nncf.quantize(
        core.read_model(str(graph_file)), nncf.Dataset(samples), subset_size=len(samples),
        model_type=nncf.ModelType.TRANSFORMER,
    )  # fmt: skip
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:  # a crash leaves no half-written cache entry
        ov.save_model(model, str(Path(tmp) / cached.name))
        for suffix in (".bin", ".xml"):  # the .xml last: its presence means a complete entry
            os.replace(Path(tmp) / cached.with_suffix(suffix).name, cached.with_suffix(suffix))
    return model
