"""A results folder read back and drawn on its frames: label maps `NNNNN.png` by frame index (as `vos track
--out` and `vos bench davis` write them) and, if present, `masks.jsonl` for the object scores in the captions.

`render_results` draws them into an H.264 video (the encoder of `vos track --render`) or a folder of images,
`OUT/NNNNN.png|jpg`; the viewer's `vos view` reads them the same way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vos.errors import ConfigError, SourceUnavailable
from vos.streams.label_map import read_label_map
from vos.streams.overlay import OverlayStyle, draw_overlay
from vos.streams.sinks.folder import JSONL_NAME
from vos.streams.sinks.video import H264Writer, video_format
from vos.streams.sources.frame_folder import FRAME_EXTENSIONS, FrameFolder
from vos.streams.sources.video_file import VideoFile

IMAGE_FORMATS = ("png", "jpg")
JPEG_QUALITY = 95


@dataclass
class RenderSummary:
    frames: int  # overlays written
    missing: int  # frames without a label map, skipped
    unreadable: int  # frames that could not be decoded, skipped


def find_label_maps(results_dir: Path) -> dict[int, Path]:
    """`RESULTS/NNNNN.png` by frame index; ConfigError saying what to give instead if there are none."""
    if not results_dir.is_dir():
        raise ConfigError(f"no such results folder: {results_dir} (give the --out DIR of `vos track`)")
    maps = {int(p.stem): p for p in results_dir.glob("*.png") if p.stem.isdigit()}
    if maps:
        return maps
    folders = sorted(d for d in results_dir.iterdir() if d.is_dir() and any(d.glob("[0-9]*.png")))
    hint = ""
    if folders:
        hint = f"; its sub-folders have them (`vos bench davis` writes one per sequence): give e.g. {folders[0]}"
    raise ConfigError(f"no NNNNN.png label maps in {results_dir}{hint}")


def read_scores(results_dir: Path) -> dict[int, dict[int, float]]:
    """Object scores by frame index and object id from `RESULTS/masks.jsonl` (empty if there is none)."""
    path = results_dir / JSONL_NAME
    if not path.is_file():
        return {}
    scores: dict[int, dict[int, float]] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                message = json.loads(line)
                scores[int(message["frame_index"])] = {int(o["id"]): float(o["score"]) for o in message["objects"]}
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(
                    f"{path} line {number} is not a masks message ({type(e).__name__}: {e}); "
                    f"move {JSONL_NAME} away to render without scores"
                ) from None
    return scores


def open_frames(source: Path) -> tuple[Sequence[np.ndarray], list[float] | None]:
    """The frames of a video file (with their times, seconds) or a folder (no times); SourceUnavailable if unreadable."""
    if not source.exists():
        raise SourceUnavailable(f"no such video file or folder of frames: {source}")
    try:
        if source.is_dir():
            return FrameFolder(source), None
        video = VideoFile(source)
        return video, video.times
    except (ValueError, OSError) as e:
        raise SourceUnavailable(str(e)) from None


def is_video_path(out: Path) -> bool:
    """Whether `--out` names a video file (a suffix FFmpeg writes), not a folder of images."""
    if out.is_dir() or not out.suffix:
        return False
    if out.suffix.lower() in FRAME_EXTENSIONS:
        raise ConfigError(f"--out {out} names one image: give a folder (an overlay image per frame) or a video (.mp4)")
    return video_format(out) is not None


class _ImageFolder:
    """Overlays as `OUT/NNNNN.png|jpg` (RGB in)."""

    def __init__(self, folder: Path, image_format: str) -> None:
        if image_format not in IMAGE_FORMATS:
            raise ConfigError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the output folder {folder}: {e.strerror or e}") from None
        self.folder = folder
        self.suffix = "." + image_format
        self.params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if image_format == "jpg" else []

    def write(self, index: int, image: np.ndarray) -> None:
        path = self.folder / f"{index:05d}{self.suffix}"
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), self.params):
            raise ConfigError(f"cannot write {path}")

    def close(self) -> None:
        pass


def read_labels(path: Path, index: int, image: np.ndarray, source: Path) -> np.ndarray:
    """The (H, W) label map of frame `index`; ConfigError if unreadable, not a label map or not the frame's size."""
    try:
        labels = read_label_map(path)
    except OSError as e:
        raise ConfigError(f"cannot read the label map {path}: {e}") from None
    if labels.ndim != 2:
        raise ConfigError(f"{path} is a colour image, not a label map (a palette or grayscale PNG of object ids)")
    if labels.shape != image.shape[:2]:
        (h, w), (lh, lw) = image.shape[:2], labels.shape
        raise ConfigError(
            f"frame {index} of {source} is {w}x{h} but its label map {path} is {lw}x{lh}: "
            "are these the results of this source?"
        )
    return labels


def _matched(count: int, maps: dict[int, Path], source: Path, results: Path) -> list[int]:
    """The frame indices (of `count` frames) that have a label map; ConfigError if none has."""
    matched = [i for i in range(count) if i in maps]
    if not matched:
        raise ConfigError(
            f"none of the {count} frames of {source} has a label map in {results} (frame N needs NNNNN.png, "
            f"e.g. 00000.png; it has {min(maps):05d}.png to {max(maps):05d}.png): give the results of this source"
        )
    return matched


def _open_output(out: Path, fps: float | None, image_format: str) -> H264Writer | _ImageFolder:
    """The video writer (path checked) or the image folder (created) that `out` names."""
    if not is_video_path(out):
        return _ImageFolder(out, image_format)
    writer = H264Writer(out, fps)
    try:
        writer.check()
    except ValueError as e:
        raise ConfigError(f"--out: {e}") from None
    return writer


def render_results(
    frames_source: str | Path,
    results_dir: str | Path,
    out: str | Path,
    style: OverlayStyle = OverlayStyle(),
    *,
    fps: float | None = None,
    image_format: str = "png",
    progress: bool = False,
) -> RenderSummary:
    """Draws the masks of `results_dir` (label maps `NNNNN.png`, scores from masks.jsonl) on the frames of a video
    file or frame folder, into `out`: an H.264 video (by its suffix: .mp4, .mkv, .mov) or a folder of images.

    Frames without a label map are skipped. `fps`: the video's rate for frame folders (default 25; a
    video source keeps its own timing). Returns how many frames were rendered and skipped; ConfigError or
    SourceUnavailable with what to do for missing folders, unmatched results or sizes that differ.
    """
    from tqdm import tqdm

    source, results = Path(frames_source), Path(results_dir)
    maps = find_label_maps(results)
    scores = read_scores(results)
    frames, times = open_frames(source)
    with contextlib.ExitStack() as stack:
        if isinstance(frames, VideoFile):
            stack.enter_context(frames)
        matched = _matched(len(frames), maps, source, results)
        output = stack.enter_context(contextlib.closing(_open_output(Path(out), fps, image_format)))
        summary = RenderSummary(0, len(frames) - len(matched), 0)
        for index in tqdm(matched, desc="rendering", unit="frame", disable=not progress, dynamic_ncols=True):
            try:
                image = frames[index]
            except ValueError:
                summary.unreadable += 1
                continue
            labels = read_labels(maps[index], index, image, source)
            overlay = draw_overlay(image, labels, scores.get(index), style, frame_index=index)
            if isinstance(output, H264Writer):
                output.write(overlay, None if times is None else times[index])
            else:
                output.write(index, overlay)
            summary.frames += 1
    return summary
