"""Meta's video predictor (sam2==1.1.0) as the oracle for the tracker and the offline session.

Both sides get the same S x S JPEG frames (Meta's PIL resize is then an identity) and the
same random weights in Meta's format. Meta normalizes pointer distances by
min(num_frames, 16) - 1, so streaming comparisons use clips of at least 16 frames.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

LOGIT_TOL = 1e-3
NUM_FRAMES = 16
VIDEO_FPS = 25  # frame rate of the test videos written by `write_video`


def write_clip(davis_root: Path, sequence: str, size: int, folder: Path, n: int = NUM_FRAMES) -> list[np.ndarray]:
    """The first n frames of a DAVIS sequence resized to size x size, saved as JPEGs in `folder` and read back."""
    frames = []
    for i in range(n):
        src = Image.open(davis_root / "JPEGImages" / "480p" / sequence / f"{i:05d}.jpg").convert("RGB")
        src.resize((size, size), Image.BICUBIC).save(folder / f"{i:05d}.jpg", quality=95)
        frames.append(np.array(Image.open(folder / f"{i:05d}.jpg").convert("RGB")))
    return frames


def ground_truth(davis_root: Path, sequence: str, frame: int, size: int) -> np.ndarray:
    """A DAVIS 2016 annotation resized to size x size (nearest), as a bool mask."""
    path = davis_root / "Annotations" / "480p" / sequence / f"{frame:05d}.png"
    return np.array(Image.open(path).resize((size, size), Image.NEAREST)) > 0


def centroid_click(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([[xs.mean(), ys.mean()]], dtype=np.float32)


def meta_video_predictor(
    checkpoint: Path,
    size: int,
    device: str = "cpu",
    overrides: tuple[str, ...] = (),
    config: str = "configs/sam2.1/sam2.1_hiera_t.yaml",
):
    """Meta's SAM2VideoPredictor for `config` (sam2.1_hiera_t) at `size`, hole filling off (its CPU path
    skips it anyway). `overrides`: Hydra overrides of its model config, e.g. "++model.max_cond_frames_in_attn=2"."""
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [*([f"++model.image_size={size}"] if size != 1024 else []), *overrides]
    meta = build_sam2_video_predictor(config, str(checkpoint), device=device, hydra_overrides_extra=overrides)
    meta.fill_hole_area = 0
    return meta


def meta_score(state: dict, obj_idx: int, frame: int) -> float:
    """The object score logit Meta holds for an object on a frame."""
    outputs = state["output_dict_per_obj"][obj_idx]
    temp = state["temp_output_dict_per_obj"][obj_idx]
    for d in (temp["cond_frame_outputs"], outputs["cond_frame_outputs"], outputs["non_cond_frame_outputs"]):
        if frame in d:
            return d[frame]["object_score_logits"].item()
    raise KeyError(f"Meta has no output for object {obj_idx} on frame {frame}")


def meta_frame(state: dict, frame: int, masks) -> tuple[np.ndarray, list[float]]:
    """What Meta returned for a frame: (N, H, W) video-res logits and each object's score, read right away."""
    return masks[:, 0].numpy().copy(), [meta_score(state, k, frame) for k in range(masks.shape[0])]


def assert_frame_matches(result, meta: tuple[np.ndarray, list[float]], obj_ids: tuple[int, ...], frame: int) -> float:
    """Compare one frame's logits and scores with Meta's (from `meta_frame`); return the worst logit difference."""
    assert result.frame_index == frame
    logits, scores = meta
    worst = 0.0
    for k, obj_id in enumerate(obj_ids):
        worst = max(worst, float(np.abs(result.logits[obj_id] - logits[k]).max()))
        score = scores[k]
        assert abs(result.scores[obj_id] - score) <= LOGIT_TOL, (frame, obj_id, result.scores[obj_id], score)
        assert (result.scores[obj_id] > 0) == (score > 0), (frame, obj_id)
    assert worst <= LOGIT_TOL, (frame, worst)
    return worst


def write_video(path, frames, codec: str = "libx264", gop: int = 8, fps: int = VIDEO_FPS, b_frames: int = 2, options: dict[str, str] | None = None) -> None:
    """An H.264 file with `b_frames` B-frames (frames decode out of presentation order), a keyframe every `gop` frames."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = b_frames
        if options:
            stream.codec_context.options = options
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
