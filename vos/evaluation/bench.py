"""`vos bench davis`: the whole DAVIS loop, tracker then J&F, in one call.

Every sequence of a DAVIS set is tracked with `vos.Tracker`, each object prompted on the first frame
with its ground-truth mask (DAVIS 2016: 255 is object 1; DAVIS 2017 palette PNGs: pixel = object id,
255 void). Each frame's masks are merged into one DAVIS palette PNG, `OUT/<sequence>/<frame>.png`
(the annotation's name and size), and `OUT` is then scored by `vos.evaluation.davis.evaluate_davis`.

Merging: a pixel gets the id of the object with the highest logit among the objects whose mask is on
there, and background (0) where no mask is on. This is Meta's non-overlapping constraint
(`_apply_non_overlapping_constraints`) applied to the output only; each object's memory keeps its own mask.

With `ray`, the sequences are tracked on Ray by `vos batch`'s actor pool instead (one model per
worker, sequences as units of work): the same tracker and the same merge through the engine, so the
PNGs are the same as in process for the same torch thread count.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from vos.build import load_from_settings
from vos.config import ModelSettings, TrackerConfig
from vos.engine.settings import RaySettings
from vos.evaluation import EvaluationError
from vos.evaluation.davis import (
    RESOLUTION,
    DavisResult,
    check_max_frames,
    evaluate_davis,
    format_davis,
    ground_truth,
    sequence_list,
)
from vos.evaluation.metrics import read_mask, short_list
from vos.evaluation.sav import SavResult, format_sav
from vos.modeling.sam2 import SAM2Model
from vos.streams.label_map import merge_masks, write_label_map
from vos.tracking.tracker import Tracker

if TYPE_CHECKING:
    from vos.distributed.batch import BatchJob

IMAGE_SUFFIX = ".jpg"


class BenchError(EvaluationError):
    """The DAVIS data to track is missing or inconsistent (frames, annotations, sizes)."""


@dataclass(frozen=True)
class BenchSequence:
    """One sequence to track: frame names (annotation names, cut to --max-frames) and first-frame prompts."""

    name: str
    frames: tuple[str, ...]
    image_dir: Path
    prompts: dict[int, np.ndarray]
    """Object id -> bool (H, W) mask on the first frame; ids absent from that frame are left out."""

    def image(self, frame: str) -> np.ndarray:
        """Frame `frame` as an HxWx3 uint8 RGB array."""
        with Image.open(self.image_dir / f"{frame}{IMAGE_SUFFIX}") as image:
            return np.array(image.convert("RGB"))  # writable: torch warns on read-only arrays


def prepare_sequence(
    davis_root: Path, name: str, resolution: str = RESOLUTION, max_frames: int | None = None
) -> BenchSequence | None:
    """Check a sequence's frames and annotations and read its prompts; None when frame 0 holds no object."""
    davis_root = Path(davis_root)
    gt = ground_truth(davis_root, name, resolution, max_frames)  # annotations: same rules as the evaluator
    if gt is None:
        return None
    image_dir = davis_root / "JPEGImages" / resolution / name
    if not image_dir.is_dir():
        raise BenchError(f"sequence {name!r}: no frames at {image_dir} (expected <frame>{IMAGE_SUFFIX} files)")
    missing = [f for f in gt.frames if not (image_dir / f"{f}{IMAGE_SUFFIX}").is_file()]
    if missing:
        raise BenchError(
            f"sequence {name!r}: {len(missing)} annotated frame(s) have no image in {image_dir} "
            f"({short_list(m + IMAGE_SUFFIX for m in missing)})"
        )
    first = gt.gt_lut[read_mask(davis_root / "Annotations" / resolution / name / f"{gt.frames[0]}.png")]
    prompts = {k: first == k for k in range(1, gt.n_objects + 1) if np.any(first == k)}
    with Image.open(image_dir / f"{gt.frames[0]}{IMAGE_SUFFIX}") as image:
        width, height = image.size
    if first.shape != (height, width):
        raise BenchError(
            f"sequence {name!r}: the first annotation is {first.shape[1]}x{first.shape[0]} but its image is "
            f"{width}x{height} (width x height)"
        )
    return BenchSequence(name, gt.frames, image_dir, prompts)


def prepare_sequences(
    davis_root: Path,
    subset: str = "val",
    sequences: Sequence[str] | None = None,
    resolution: str = RESOLUTION,
    max_frames: int | None = None,
) -> tuple[list[BenchSequence], list[str]]:
    """The sequences to track (from `sequences`, else the set's list, as `vos eval davis`) and notes."""
    davis_root = Path(davis_root)
    if not davis_root.is_dir():
        raise BenchError(f"DAVIS root {davis_root} not found")
    check_max_frames(max_frames)
    notes: list[str] = []
    if sequences:
        names = list(dict.fromkeys(sequences))
    else:
        names, source = sequence_list(davis_root, subset, resolution)
        if not names:
            raise BenchError(f"no sequences listed in {source}")
        notes.append(f"{len(names)} sequence(s) of set {subset!r} from {source}")
    unknown = [n for n in names if not (davis_root / "Annotations" / resolution / n).is_dir()]
    if unknown:
        raise BenchError(
            f"{len(unknown)} sequence(s) not found in {davis_root / 'Annotations' / resolution}: {short_list(unknown)}"
        )
    prepared: list[BenchSequence] = []
    for name in names:
        seq = prepare_sequence(davis_root, name, resolution, max_frames)
        if seq is None:
            notes.append(f"sequence {name!r} skipped: its first annotation holds no object")
        else:
            prepared.append(seq)
    if not prepared:
        raise BenchError(f"none of the {len(names)} sequence(s) has an object in its first annotation")
    return prepared, notes


@dataclass(frozen=True)
class BenchResult:
    """Scores and timings of one `vos bench davis` run."""

    evaluation: DavisResult | SavResult
    sequences: int
    """Sequences (videos) tracked."""
    frames: int
    objects: int
    """Objects prompted, summed over sequences."""
    tracker_seconds: float
    """Time spent in `Tracker.step` only (NaN on Ray: the workers' time is not reported)."""
    loop_seconds: float
    """Wall time of the whole loop: reading frames, tracking, merging and writing PNGs."""
    load_seconds: float
    notes: tuple[str, ...]
    workers: int | None = None
    """Ray workers that tracked the sequences; None: this process."""

    @classmethod
    def of(cls, evaluation, videos: int, objects: int, tracked: Tracked, notes: Sequence[str], workers: int | None) -> BenchResult:
        return cls(
            evaluation, sequences=videos, frames=tracked.frames, objects=objects, tracker_seconds=tracked.tracker_seconds,
            loop_seconds=tracked.loop_seconds, load_seconds=tracked.load_seconds, notes=tuple(notes) + evaluation.notes,
            workers=workers,
        )  # fmt: skip

    @property
    def tracker_fps(self) -> float:
        return self.frames / self.tracker_seconds if self.tracker_seconds > 0 else float("nan")

    @property
    def loop_fps(self) -> float:
        return self.frames / self.loop_seconds if self.loop_seconds > 0 else float("nan")


def track_sequences(
    model: SAM2Model,
    sequences: Sequence[BenchSequence],
    out_dir: Path,
    progress: bool = False,
    tracker_config: TrackerConfig | None = None,
) -> tuple[int, float, float]:
    """Track and write every sequence; returns (frames, seconds in `Tracker.step`, wall seconds)."""
    start = time.perf_counter()
    tracker_seconds = 0.0
    frames = 0
    total = sum(len(s.frames) for s in sequences)
    with tqdm(total=total, disable=not progress, desc="tracking", unit="frame", dynamic_ncols=True) as bar:
        for seq in sequences:
            bar.set_postfix_str(seq.name, refresh=False)
            seq_dir = Path(out_dir) / seq.name
            seq_dir.mkdir(parents=True, exist_ok=True)
            tracker = Tracker(model, tracker_config)
            for obj_id, mask in seq.prompts.items():
                tracker.add_prompt(obj_id, mask=mask)
            for frame in seq.frames:
                image = seq.image(frame)
                t0 = time.perf_counter()
                result = tracker.step(image)
                tracker_seconds += time.perf_counter() - t0
                write_label_map(seq_dir / f"{frame}.png", merge_masks(result.masks, result.logits, image.shape[:2]))
                frames += 1
                bar.update()
    return frames, tracker_seconds, time.perf_counter() - start


def mask_job(name: str, image_dir: Path, prompts: Mapping[int, tuple[int, np.ndarray]]) -> BatchJob:
    """A `vos batch` job: the frames of `image_dir`, each object prompted with its mask on its frame index."""
    from vos.distributed.batch import BatchJob
    from vos.engine.settings import StreamPrompt
    from vos.streams.messages import Rle

    return BatchJob(
        name, str(image_dir), tuple(StreamPrompt(obj_id=k, frame=f, mask=Rle.from_mask(m)) for k, (f, m) in prompts.items())
    )


@dataclass(frozen=True)
class Tracked:
    """What tracking a benchmark's videos took."""

    frames: int
    tracker_seconds: float  # in `Tracker.step`; NaN on Ray
    loop_seconds: float  # wall time of the loop (on Ray: the pool's, models loaded included)
    load_seconds: float  # loading the model in this process (0 on Ray)


def track_benchmark(
    model: ModelSettings,
    in_process: Callable[[SAM2Model], tuple[int, float, float]],
    make_jobs: Callable[[], list[BatchJob]],
    out_dir: Path,
    tracker: TrackerConfig,
    ray: RaySettings | None = None,
    max_frames: int | None = None,
    progress: bool = False,
) -> Tracked:
    """Tracks a benchmark: `in_process(loaded model)` -> (frames, step seconds, wall seconds), or with `ray`
    the `make_jobs()` on `vos batch`'s Ray pool into `out_dir/<name>/` (label maps by frame index). Each job's folder
    is replaced first, as an in-process run overwrites its PNGs."""
    if ray is not None:
        from vos.distributed.batch import run_batch

        jobs = make_jobs()
        for job in jobs:
            shutil.rmtree(Path(out_dir) / job.name, ignore_errors=True)
        summary = run_batch(jobs, out_dir, model, tracker, ray, max_frames=max_frames, progress=progress)
        if summary.failed:
            raise BenchError(f"{len(summary.failed)} video(s) failed on Ray: {summary.text()}")
        return Tracked(summary.frames, float("nan"), summary.seconds, 0.0)
    start = time.perf_counter()
    loaded = load_from_settings(model)
    load_seconds = time.perf_counter() - start
    return Tracked(*in_process(loaded), load_seconds)


def bench_davis(
    davis_root: Path,
    out_dir: Path,
    model: ModelSettings = ModelSettings(),
    tracker: TrackerConfig = TrackerConfig(),
    *,
    subset: str = "val",
    sequences: Sequence[str] | None = None,
    max_frames: int | None = None,
    resolution: str = RESOLUTION,
    ray: RaySettings | None = None,
    eval_threads: int | None = None,
    progress: bool = False,
) -> BenchResult:
    """Track every sequence of a DAVIS set from its first-frame masks, write the PNGs to `out_dir`, score them.

    The data is checked before the model is loaded. With `max_frames`, only the first `max_frames`
    frames of each sequence are tracked and scored (the protocol skips the first and the last of them).
    `ray`: track on `vos batch`'s Ray pool (`RaySettings`: workers, address, ...) instead of in this process.
    `eval_threads`: scoring threads (default: all CPUs).
    """
    davis_root, out_dir = Path(davis_root), Path(out_dir)
    prepared, notes = prepare_sequences(davis_root, subset, sequences, resolution, max_frames)

    def jobs() -> list[BatchJob]:
        for seq in prepared:
            if seq.frames[0] != "00000":
                raise BenchError(f"sequence {seq.name!r}: on Ray, frames must be named 00000, 00001, ... (the engine's names)")
        return [mask_job(seq.name, seq.image_dir, {k: (0, m) for k, m in seq.prompts.items()}) for seq in prepared]

    in_process = lambda loaded: track_sequences(loaded, prepared, out_dir, progress, tracker)  # noqa: E731
    tracked = track_benchmark(model, in_process, jobs, out_dir, tracker, ray, max_frames, progress)
    evaluation = evaluate_davis(
        davis_root, out_dir, subset=subset, sequences=[s.name for s in prepared], strict=True, resolution=resolution,
        threads=eval_threads, progress=progress, max_frames=max_frames,
    )  # fmt: skip
    workers = None if ray is None else ray.workers
    return BenchResult.of(evaluation, len(prepared), sum(len(s.prompts) for s in prepared), tracked, notes, workers)


def format_bench(result: BenchResult) -> str:
    """The official global and per-sequence tables, then frames, objects and frames/s."""
    table = format_davis(result.evaluation) if isinstance(result.evaluation, DavisResult) else format_sav(result.evaluation)
    head = f"{table}\n\nTracked {result.frames} frames of {result.sequences} sequence(s), {result.objects} object(s)"
    if result.workers is not None:
        return (
            f"{head} on Ray, {result.workers} worker(s)\n"
            f"Whole loop: {result.loop_fps:.2f} frames/s ({result.loop_seconds:.2f} s wall: models loaded, read, track, "
            f"write PNGs)\nScored in {result.evaluation.seconds:.2f} s"
        )
    return (
        f"{head}\n"
        f"Tracker: {result.tracker_fps:.2f} frames/s ({result.tracker_seconds:.2f} s in Tracker.step)\n"
        f"Whole loop: {result.loop_fps:.2f} frames/s ({result.loop_seconds:.2f} s wall: read, track, write PNGs)\n"
        f"Model loaded in {result.load_seconds:.2f} s; scored in {result.evaluation.seconds:.2f} s"
    )
