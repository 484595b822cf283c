"""vos: streaming video object segmentation and tracking with SAM 2 / SAM 2.1.

    import vos
    model = vos.load_model("sam2.1_hiera_t", checkpoint="sam2.1_hiera_tiny.pt", image_size=1024)
    predictor = vos.ImagePredictor(model)
"""

from vos.build import build_model, load_model
from vos.config import ModelConfig, available_models, load_config
from vos.errors import CheckpointError, ConfigError, DownloadError, VosError
from vos.image_predictor import ImagePredictor
from vos.config import TrackerConfig
from vos.tracker import TrackResult, Tracker
from vos.video_session import VideoSession

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DownloadError",
    "ImagePredictor",
    "ModelConfig",
    "TrackResult",
    "Tracker",
    "TrackerConfig",
    "VideoSession",
    "VosError",
    "available_models",
    "build_model",
    "load_config",
    "load_model",
]
__version__ = "0.1.0"
