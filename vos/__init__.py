"""vos: streaming video object segmentation and tracking with SAM 2 / SAM 2.1.

    import vos
    model = vos.load_model("sam2.1_hiera_t", checkpoint="sam2.1_hiera_tiny.pt", image_size=1024)
    predictor = vos.ImagePredictor(model)

Names are imported on first use (PEP 562), so `import vos` and the torch-free modules
(`vos.config`, `vos.tracking.prompts`, `vos.streams.messages`) stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vos.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "auto_annotate": "vos.annotation.annotate",
    "build_model": "vos.build",
    "load_model": "vos.build",
    "ModelConfig": "vos.config",
    "TrackerConfig": "vos.config",
    "available_models": "vos.config",
    "load_config": "vos.config",
    "ModelSettings": "vos.config",
    "DiscoverySettings": "vos.config",
    "Engine": "vos.engine.engine",
    "EngineConfig": "vos.engine.settings",
    "StreamSettings": "vos.engine.settings",
    "CheckpointError": "vos.errors",
    "ConfigError": "vos.errors",
    "Detections": "vos.detection.detector",
    "Detector": "vos.detection.detector",
    "DetectorSettings": "vos.config",
    "DownloadError": "vos.errors",
    "VosError": "vos.errors",
    "ImagePredictor": "vos.image_predictor",
    "export_onnx": "vos.export.onnx",
    "OnnxExportSettings": "vos.export.onnx",
    "MaskGenerator": "vos.segment.generator",
    "MaskGeneratorSettings": "vos.config",
    "Prompt": "vos.tracking.prompts",
    "TrackResult": "vos.tracking.tracker",
    "Tracker": "vos.tracking.tracker",
    "VideoSession": "vos.tracking.video_session",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from vos.annotation.annotate import auto_annotate
    from vos.build import build_model, load_model
    from vos.config import (
        DetectorSettings,
        DiscoverySettings,
        MaskGeneratorSettings,
        ModelConfig,
        ModelSettings,
        TrackerConfig,
        available_models,
        load_config,
    )
    from vos.detection.detector import Detections, Detector
    from vos.engine.engine import Engine
    from vos.engine.settings import EngineConfig, StreamSettings
    from vos.errors import CheckpointError, ConfigError, DownloadError, VosError
    from vos.export.onnx import OnnxExportSettings, export_onnx
    from vos.image_predictor import ImagePredictor
    from vos.segment.generator import MaskGenerator
    from vos.tracking.prompts import Prompt
    from vos.tracking.tracker import Tracker, TrackResult
    from vos.tracking.video_session import VideoSession


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
