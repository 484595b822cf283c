"""SA-V val/test evaluation, equal to Meta's `sav_dataset/sav_evaluator.py` (facebookresearch/sam2).

Layout (ground truth and results alike): `ROOT/<video>/<obj>/<frame>.png`, one binary mask per
object and annotated frame (any non-zero value is the object). Conventions of the reference:

- an object's frames are its ground-truth PNGs, sorted; the first and the last are skipped unless
  asked otherwise; frames before the object first shows up (in ground truth or result) do not count;
- J and F per frame as in DAVIS; per object the means over frames, ×100; the global J and F are
  means over all objects and J&F is their average;
- `results.csv` holds a global row and a row per object, formatted as the reference writes it.

Where the reference crashes (an object absent from every scored ground-truth frame), the object is
left out and a note says so.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vos.evaluation import EvaluationError
from vos.evaluation.metrics import FramePair, FrameScores, binary_lut, png_stems, score_pairs, short_list

SCORE_SCALE = 100.0
"""SA-V reports scores in percent."""
MAX_VALUES_PER_MASK = 2
"""A SA-V PNG holds background and at most one object value."""
RESULTS_CSV = "results.csv"
_GLOBAL_ROW = "Global score"


@dataclass(frozen=True)
class SavObject:
    """One object's per-frame scores (0..1) over the `frames` that count; J, F, JF are in percent."""

    video: str
    obj: str
    frames: tuple[str, ...]
    j: np.ndarray
    f: np.ndarray

    @property
    def J(self) -> float:
        return float(np.mean(self.j) * SCORE_SCALE)

    @property
    def F(self) -> float:
        return float(np.mean(self.f) * SCORE_SCALE)

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2


@dataclass(frozen=True)
class SavResult:
    """Scores of every evaluated object, videos without results, notes, and the run time."""

    objects: tuple[SavObject, ...]
    missing: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float

    @property
    def J(self) -> float:
        return float(np.mean([o.J for o in self.objects]))

    @property
    def F(self) -> float:
        return float(np.mean([o.F for o in self.objects]))

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2


@dataclass(frozen=True)
class _Object:
    video: str
    obj: str
    frames: tuple[str, ...]


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def _objects(gt_root: Path, video: str, skip_first_last: bool) -> list[_Object]:
    video_dir = gt_root / video
    if any(video_dir.glob("*.png")):
        raise EvaluationError(
            f"{video_dir} holds PNGs directly (DAVIS layout); SA-V needs one folder of binary masks per object "
            f"(use `vos eval davis` for DAVIS-style annotations)"
        )
    objects = []
    for obj in _subdirs(video_dir):
        frames = png_stems(video_dir / obj)
        objects.append(_Object(video, obj, tuple(frames[1:-1] if skip_first_last else frames)))
    return objects


def _check_masks(pair: FramePair, scores: FrameScores) -> None:
    for path, values in ((pair.gt, scores.gt_values), (pair.pred, scores.pred_values)):
        if np.count_nonzero(values) > MAX_VALUES_PER_MASK:
            raise EvaluationError(
                f"{path} holds values {np.flatnonzero(values).tolist()}: SA-V expects one object mask per PNG "
                f"(0 = background, one non-zero value)"
            )


def evaluate_sav(
    gt_root: Path,
    results_dir: Path,
    *,
    skip_first_last: bool = True,
    strict: bool = False,
    threads: int | None = None,
    progress: bool = False,
) -> SavResult:
    """Score `results_dir` against SA-V ground truth at `gt_root` (both `<video>/<obj>/<frame>.png`).

    Without `strict`, videos with no results folder are skipped (listed in `missing`); with it, the
    two roots must hold the same videos.
    """
    start = time.perf_counter()
    gt_root, results_dir = Path(gt_root), Path(results_dir)
    for folder, what in ((gt_root, "ground-truth root"), (results_dir, "results folder")):
        if not folder.is_dir():
            raise EvaluationError(f"{what} {folder} not found")
    gt_videos = _subdirs(gt_root)
    if not gt_videos:
        raise EvaluationError(f"{gt_root} holds no video folders (expected <video>/<obj>/<frame>.png)")
    result_videos = set(_subdirs(results_dir))
    missing = [v for v in gt_videos if v not in result_videos]
    if strict:
        extra = sorted(result_videos - set(gt_videos))
        if missing or extra:
            problems = [f"{len(missing)} video(s) without results: {short_list(missing)}"] if missing else []
            problems += [f"{len(extra)} result video(s) not in {gt_root}: {short_list(extra)}"] if extra else []
            raise EvaluationError("; ".join(problems))
    notes = ["first and last annotated frames skipped" if skip_first_last else "first and last frames kept"]
    if missing:
        notes.append(f"{len(missing)} video(s) without results skipped: {short_list(missing)}")

    objects: list[_Object] = []
    for video in gt_videos:
        if video in result_videos:
            objects.extend(_objects(gt_root, video, skip_first_last))
    for o in objects:
        pred_dir = results_dir / o.video / o.obj
        if not pred_dir.is_dir():
            raise EvaluationError(f"object {o.obj} of video {o.video!r}: no results folder {pred_dir}")
        absent = sorted(set(o.frames) - set(png_stems(pred_dir)))
        if absent:
            raise EvaluationError(
                f"object {o.obj} of video {o.video!r}: {len(absent)} result frame(s) missing in {pred_dir} "
                f"({short_list(a + '.png' for a in absent)})"
            )

    lut = binary_lut()
    pairs = [
        FramePair(gt_root / o.video / o.obj / png, results_dir / o.video / o.obj / png, 1, lut, lut)
        for o in objects
        for png in (f"{frame}.png" for frame in o.frames)
    ]
    scores = []
    with closing(score_pairs(pairs, threads=threads)) as stream:  # on an error, stop the queued frames
        for pair, frame in tqdm(zip(pairs, stream), total=len(pairs), disable=not progress, unit="frame"):
            _check_masks(pair, frame)
            scores.append(frame)

    scored: list[SavObject] = []
    row = 0
    for o in objects:
        frames = scores[row : row + len(o.frames)]
        row += len(o.frames)
        present = [s.gt_area[0] > 0 or s.pred_area[0] > 0 for s in frames]
        if not any(s.gt_area[0] > 0 for s in frames):
            notes.append(f"object {o.obj} of video {o.video!r} left out: no scored ground-truth frame shows it")
            continue
        first = present.index(True)
        scored.append(
            SavObject(
                o.video,
                o.obj,
                o.frames[first:],
                np.array([s.j[0] for s in frames[first:]]),
                np.array([s.f[0] for s in frames[first:]]),
            )
        )
    if not scored:
        raise EvaluationError(f"nothing to evaluate: no video of {gt_root} has scored objects with results")
    return SavResult(tuple(scored), tuple(missing), tuple(notes), time.perf_counter() - start)


def sav_csv_text(result: SavResult) -> str:
    """`results.csv` as the reference writes it: a header, the global row, one row per object (1 decimal)."""
    width = max([len(o.video) for o in result.objects] + [len(_GLOBAL_ROW)])
    lines = [
        f'{"sequence":<{width}},{"obj":>3}, {"J&F":>4}, {"J":>4}, {"F":>4}',
        f'{_GLOBAL_ROW:<{width}},{"":>3}, {result.JF:.1f}, {result.J:.1f}, {result.F:.1f}',
    ]
    lines += [f"{o.video:<{width}},{o.obj:>3}, {o.JF:>4.1f}, {o.J:>4.1f}, {o.F:>4.1f}" for o in result.objects]
    return "\n".join(lines) + "\n"


def write_sav_csv(result: SavResult, out_dir: Path) -> Path:
    """Write `results.csv` into `out_dir` and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_CSV
    path.write_text(sav_csv_text(result))
    return path


def format_sav(result: SavResult) -> str:
    """The per-object table and the summary line, as the reference prints them."""
    return (
        sav_csv_text(result).replace(",", " ")
        + f"\nSummary:\nGlobal score: J&F: {result.JF:.1f} J: {result.J:.1f} F: {result.F:.1f}"
    )
