"""`vos bench sav`: the SA-V val/test loop, tracker then J&F, in one call.

Layout of an SA-V split (`sav_val/`, `sav_test/`): `JPEGImages_24fps/<video>/<frame>.jpg` (every frame)
and `Annotations_6fps/<video>/<obj>/<frame>.png` (one binary mask per object on every 4th frame). As
Meta's `tools/vos_inference.py` does for SA-V (`--track_object_appearing_later_in_video`), each object
is prompted with its ground-truth mask on the first annotated frame where it shows, and every frame is
tracked. For each object and annotated frame its mask is written as `OUT/<video>/<obj>/<frame>.png`
(0/255), the layout `vos eval sav` scores, and `OUT` is then scored.

Where masks overlap, a pixel goes to the object with the highest logit, as in `vos bench davis` and in
the engine's label maps, which the Ray path (`ray`) writes first; Meta's script writes each
object's mask as it is. Objects of SA-V rarely overlap, so the scores differ at most at boundaries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from vos.config import ModelSettings, TrackerConfig
from vos.engine.settings import RaySettings
from vos.evaluation.bench import IMAGE_SUFFIX, BenchError, BenchResult, mask_job, track_benchmark
from vos.evaluation.metrics import png_stems, read_mask, short_list
from vos.evaluation.sav import evaluate_sav
from vos.modeling.sam2 import SAM2Model
from vos.streams.label_map import merge_masks, read_label_map
from vos.tracking.tracker import Tracker

FRAMES_DIR = "JPEGImages_24fps"
ANNOTATIONS_DIR = "Annotations_6fps"
RAY_LABELS = ".labels"  # under OUT: the label maps the Ray path writes before they are split per object


@dataclass(frozen=True)
class SavVideo:
    """One video to track: its frames, its objects' annotated frames and their first-appearance prompts."""

    name: str
    image_dir: Path
    frames: tuple[str, ...]
    """Every frame's name (no suffix), in name order; the engine's frame index is the position here."""
    objects: dict[int, str]
    """Tracker object id (1, 2, ...) -> the object's annotation folder name ("000", "001", ...)."""
    annotated: dict[int, tuple[str, ...]]
    """Object id -> the frames it has ground truth for (its results are written for these)."""
    prompts: dict[int, tuple[int, np.ndarray]]
    """Object id -> (frame index, bool (H, W) mask) of its first annotated frame where it shows; objects that
    never show are left out."""

    def image(self, index: int) -> np.ndarray:
        with Image.open(self.image_dir / f"{self.frames[index]}{IMAGE_SUFFIX}") as image:
            return np.array(image.convert("RGB"))


def prepare_video(sav_root: Path, name: str) -> SavVideo:
    """Check a video's frames and annotations and read its prompts (BenchError says what is wrong)."""
    image_dir, gt_dir = sav_root / FRAMES_DIR / name, sav_root / ANNOTATIONS_DIR / name
    if not image_dir.is_dir():
        raise BenchError(f"video {name!r}: no frames at {image_dir} (expected <frame>{IMAGE_SUFFIX} files)")
    frames = tuple(sorted(p.stem for p in image_dir.glob(f"*{IMAGE_SUFFIX}") if p.is_file()))
    index = {f: i for i, f in enumerate(frames)}
    obj_dirs = sorted(p.name for p in gt_dir.iterdir() if p.is_dir()) if gt_dir.is_dir() else []
    if not obj_dirs:
        raise BenchError(f"video {name!r}: no object folders in {gt_dir} (expected <obj>/<frame>.png)")
    objects, annotated, prompts = {}, {}, {}
    for obj_id, obj in enumerate(obj_dirs, start=1):
        objects[obj_id] = obj
        annotated[obj_id] = tuple(png_stems(gt_dir / obj))
        missing = [f for f in annotated[obj_id] if f not in index]
        if missing:
            raise BenchError(f"video {name!r}, object {obj}: annotated frame(s) without an image: {short_list(missing)}")
        for frame in annotated[obj_id]:
            mask = read_mask(gt_dir / obj / f"{frame}.png") > 0
            if mask.any():
                prompts[obj_id] = (index[frame], mask)
                break
    return SavVideo(name, image_dir, frames, objects, annotated, prompts)


def prepare_videos(sav_root: Path, videos: Sequence[str] | None = None) -> tuple[list[SavVideo], list[str]]:
    """The videos to track (`videos`, else every folder of Annotations_6fps) and notes."""
    sav_root = Path(sav_root)
    gt_root = sav_root / ANNOTATIONS_DIR
    if not gt_root.is_dir():
        raise BenchError(f"SA-V root {sav_root}: no {ANNOTATIONS_DIR}/ folder")
    names = list(dict.fromkeys(videos)) if videos else sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    unknown = [n for n in names if not (gt_root / n).is_dir()]
    if unknown:
        raise BenchError(f"{len(unknown)} video(s) not found in {gt_root}: {short_list(unknown)}")
    if not names:
        raise BenchError(f"{gt_root} holds no video folders")
    prepared, notes = [], []
    for name in names:
        video = prepare_video(sav_root, name)
        if not video.prompts:
            notes.append(f"video {name!r} skipped: none of its objects shows in its annotations")
        else:
            prepared.append(video)
    if not prepared:
        raise BenchError(f"none of the {len(names)} video(s) has an object that shows")
    return prepared, notes


def write_object_masks(video: SavVideo, out_dir: Path, index: int, labels: np.ndarray) -> None:
    """Frame `index`'s masks (a label map: pixel = object id) as OUT/<video>/<obj>/<frame>.png, for the
    objects annotated on that frame."""
    frame = video.frames[index]
    for obj_id, obj in video.objects.items():
        if frame in video.annotated[obj_id]:
            folder = out_dir / video.name / obj
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(labels == obj_id, 255, 0).astype(np.uint8)).save(folder / f"{frame}.png")


def track_videos(
    model: SAM2Model,
    videos: Sequence[SavVideo],
    out_dir: Path,
    progress: bool = False,
    tracker_config: TrackerConfig | None = None,
) -> tuple[int, float, float]:
    """Track and write every video; returns (frames, seconds in `Tracker.step`, wall seconds)."""
    start = time.perf_counter()
    tracker_seconds, frames = 0.0, 0
    with tqdm(total=sum(len(v.frames) for v in videos), disable=not progress, desc="tracking", unit="frame") as bar:
        for video in videos:
            bar.set_postfix_str(video.name, refresh=False)
            tracker = Tracker(model, tracker_config)
            for index in range(len(video.frames)):
                for obj_id, (frame, mask) in video.prompts.items():
                    if frame == index:
                        tracker.add_prompt(obj_id, mask=mask)
                image = video.image(index)
                t0 = time.perf_counter()
                result = tracker.step(image)
                tracker_seconds += time.perf_counter() - t0
                write_object_masks(video, Path(out_dir), index, merge_masks(result.masks, result.logits, image.shape[:2]))
                frames += 1
                bar.update()
    return frames, tracker_seconds, time.perf_counter() - start


def split_label_maps(videos: Sequence[SavVideo], labels_dir: Path, out_dir: Path) -> None:
    """The Ray path's label maps (`labels_dir/<video>/NNNNN.png` by frame index) as per-object masks."""
    for video in videos:
        for index, frame in enumerate(video.frames):
            if any(frame in frames for frames in video.annotated.values()):
                write_object_masks(video, out_dir, index, read_label_map(labels_dir / video.name / f"{index:05d}.png"))


def bench_sav(
    sav_root: Path,
    out_dir: Path,
    model: ModelSettings = ModelSettings(),
    tracker: TrackerConfig = TrackerConfig(),
    *,
    videos: Sequence[str] | None = None,
    ray: RaySettings | None = None,
    eval_threads: int | None = None,
    progress: bool = False,
) -> BenchResult:
    """Track the SA-V videos of `sav_root` from each object's first annotated mask, write the per-object
    PNGs to `out_dir`, score them as `vos eval sav` does (first and last annotated frames skipped).

    `ray` and `eval_threads` as for `bench_davis`.
    """
    sav_root, out_dir = Path(sav_root), Path(out_dir)
    prepared, notes = prepare_videos(sav_root, videos)
    labels_dir = out_dir / RAY_LABELS
    jobs = lambda: [mask_job(v.name, v.image_dir, v.prompts) for v in prepared]  # noqa: E731
    in_process = lambda loaded: track_videos(loaded, prepared, out_dir, progress, tracker)  # noqa: E731
    tracked = track_benchmark(model, in_process, jobs, labels_dir, tracker, ray, progress=progress)
    if ray is not None:
        split_label_maps(prepared, labels_dir, out_dir)
    evaluation = evaluate_sav(sav_root / ANNOTATIONS_DIR, out_dir, threads=eval_threads, progress=progress)
    workers = None if ray is None else ray.workers
    return BenchResult.of(evaluation, len(prepared), sum(len(v.prompts) for v in prepared), tracked, notes, workers)
