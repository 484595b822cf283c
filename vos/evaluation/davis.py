"""The DAVIS semi-supervised protocol, equal to davisvideochallenge/davis2017-evaluation.

Objects are the ids 1..K of a sequence's first annotation (255 is void and counts as background);
a DAVIS 2016 annotation (values 0/255 only) is one object. Each object is scored on every annotated
frame but the first and the last, and summarised per object by Mean, Recall and Decay; the global
table averages those over all objects. Results are `RESULTS/<seq>/<frame>.png` with object ids.

One departure: the toolkit stores the Decay bin edges as uint8, which wraps for sequences longer
than 256 frames; here they are int64.
"""

from __future__ import annotations

import csv
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from vos.evaluation import EvaluationError
from vos.evaluation.metrics import N_VALUES, FramePair, ids_lut, png_stems, read_mask, score_pairs, short_list

RESOLUTION = "480p"
VOID_LABEL = 255
RECALL_THRESHOLD = 0.5
"""A frame counts towards Recall when its score is above this."""
DECAY_BINS = 4
"""Decay is the mean of the first of these bins of frames minus the mean of the last."""
_ROUND_HALF_UP = 1e-10
"""The toolkit adds this before np.round so that bin edges at .5 round up."""
IMAGE_SET_YEARS = ("2017", "2016")
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
PER_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")
CSV_FLOAT_FORMAT = "{:.3f}"
MIN_FRAMES = 3
"""Annotated frames a sequence needs: the first and the last are not scored."""


@dataclass(frozen=True)
class Statistics:
    """Summary of per-frame scores: mean, fraction above RECALL_THRESHOLD, and decay over time."""

    mean: float
    recall: float
    decay: float


def decay_bin_edges(n_frames: int) -> np.ndarray:
    """(DECAY_BINS + 1,) int64 frame indices; bin i spans edges[i]..edges[i + 1] inclusive."""
    edges = np.round(np.linspace(1, n_frames, DECAY_BINS + 1) + _ROUND_HALF_UP) - 1
    return edges.astype(np.int64)


def statistics(per_frame: np.ndarray) -> Statistics:
    """Mean, Recall and Decay of (N,) per-frame scores, as the toolkit's `db_statistics`."""
    values = np.asarray(per_frame, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"expected a non-empty (N,) array, got shape {values.shape}")
    edges = decay_bin_edges(values.size)
    bins = [values[edges[i] : edges[i + 1] + 1] for i in range(DECAY_BINS)]
    return Statistics(
        mean=float(np.mean(values)),
        recall=float(np.mean(values > RECALL_THRESHOLD)),
        decay=float(np.mean(bins[0]) - np.mean(bins[-1])),
    )


@dataclass(frozen=True)
class ObjectResult:
    """Per-frame scores of one object: j, f are (N,) over `frames` (annotation names without .png)."""

    sequence: str
    object_id: int
    frames: tuple[str, ...]
    j: np.ndarray
    f: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.sequence}_{self.object_id}"

    @property
    def j_stats(self) -> Statistics:
        return statistics(self.j)

    @property
    def f_stats(self) -> Statistics:
        return statistics(self.f)


@dataclass(frozen=True)
class DavisResult:
    """Everything one evaluation found: scores per object, what was skipped, and how long it took."""

    subset: str
    objects: tuple[ObjectResult, ...]
    missing: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float

    def global_scores(self) -> dict[str, float]:
        """The global table: GLOBAL_COLUMNS -> value, each a mean over objects."""
        j = [o.j_stats for o in self.objects]
        f = [o.f_stats for o in self.objects]
        j_mean = float(np.mean([s.mean for s in j]))
        f_mean = float(np.mean([s.mean for s in f]))
        values = (
            (j_mean + f_mean) / 2,
            j_mean,
            float(np.mean([s.recall for s in j])),
            float(np.mean([s.decay for s in j])),
            f_mean,
            float(np.mean([s.recall for s in f])),
            float(np.mean([s.decay for s in f])),
        )
        return dict(zip(GLOBAL_COLUMNS, values))

    def per_sequence(self) -> list[tuple[str, float, float]]:
        """(`seq_objid`, J-Mean, F-Mean) per object, in evaluation order."""
        return [(o.name, o.j_stats.mean, o.f_stats.mean) for o in self.objects]


@dataclass(frozen=True)
class SequenceGroundTruth:
    """A sequence's annotated frames (names without .png) and objects 1..n_objects.

    gt_lut ((256,) uint8) maps the annotations' pixel values to object ids: 255 -> 1 for a binary
    DAVIS 2016 sequence, 1..n_objects -> themselves (255 void -> 0) for DAVIS 2017 palette PNGs.
    """

    name: str
    frames: tuple[str, ...]
    n_objects: int
    gt_lut: np.ndarray
    binary: bool


def _read_image_set(path: Path) -> list[str]:
    """Sequence names of an ImageSets file (DAVIS 2017 lists names; DAVIS 2016 lists frame paths)."""
    names: dict[str, None] = {}
    for line in path.read_text().splitlines():
        token = line.split()[0] if line.strip() else ""
        if token:
            names[Path(token).parent.name if "/" in token else token] = None
    return list(names)


def sequence_list(davis_root: Path, subset: str, resolution: str = RESOLUTION) -> tuple[list[str], str]:
    """Sequences of a set and where the list came from: ImageSets/{2017,2016}/{subset}.txt, else the folders."""
    davis_root = Path(davis_root)
    for year in IMAGE_SET_YEARS:
        listing = davis_root / "ImageSets" / year / f"{subset}.txt"
        if listing.is_file():
            return _read_image_set(listing), str(listing)
    annotations = davis_root / "Annotations" / resolution
    if not annotations.is_dir():
        raise EvaluationError(
            f"{annotations} not found: the DAVIS root must hold Annotations/{resolution}/<sequence>/*.png"
        )
    return sorted(d.name for d in annotations.iterdir() if d.is_dir()), str(annotations)


def check_max_frames(max_frames: int | None) -> None:
    """Reject a frame limit too small for the protocol (the first and the last frame are never scored)."""
    if max_frames is not None and max_frames < MIN_FRAMES:
        raise EvaluationError(
            f"max_frames is {max_frames}: the protocol skips the first and the last frame, "
            f"so it needs at least {MIN_FRAMES}"
        )


def ground_truth(
    davis_root: Path, name: str, resolution: str = RESOLUTION, max_frames: int | None = None
) -> SequenceGroundTruth | None:
    """A sequence's annotated frames and objects; None when its first annotation holds no object.

    With `max_frames`, the sequence is cut to its first `max_frames` annotated frames, as if it ended
    there (the protocol then skips the first and the last of those).
    """
    gt_dir = davis_root / "Annotations" / resolution / name
    if not gt_dir.is_dir():
        raise EvaluationError(f"sequence {name!r}: no annotations at {gt_dir}")
    frames = png_stems(gt_dir)
    images = davis_root / "JPEGImages" / resolution / name
    if images.is_dir():
        unannotated = sorted({p.stem for p in images.glob("*.jpg")} - set(frames))
        if unannotated:
            raise EvaluationError(
                f"sequence {name!r}: {len(unannotated)} frame(s) of {images} have no annotation in {gt_dir} "
                f"({short_list(unannotated)})"
            )
    if max_frames is not None:
        frames = frames[:max_frames]
    if len(frames) < MIN_FRAMES:
        raise EvaluationError(
            f"sequence {name!r}: {len(frames)} annotated frame(s) in {gt_dir}; the protocol skips the first "
            f"and the last, so it needs at least {MIN_FRAMES}"
        )
    values = np.unique(read_mask(gt_dir / f"{frames[0]}.png"))
    if values.max() == VOID_LABEL and set(values.tolist()) <= {0, VOID_LABEL}:
        lut = np.zeros(N_VALUES, dtype=np.uint8)
        lut[VOID_LABEL] = 1
        return SequenceGroundTruth(name, tuple(frames), 1, lut, binary=True)
    n_objects = int(values[values != VOID_LABEL].max())
    if n_objects == 0:
        return None
    return SequenceGroundTruth(name, tuple(frames), n_objects, ids_lut(n_objects), binary=False)


def _check_results(results_dir: Path, seq: SequenceGroundTruth) -> None:
    missing = sorted(set(seq.frames[1:-1]) - set(png_stems(results_dir / seq.name)))
    if missing:
        raise EvaluationError(
            f"sequence {seq.name!r}: {len(missing)} result frame(s) missing in {results_dir / seq.name} "
            f"({short_list(m + '.png' for m in missing)}); write one PNG per annotated frame, named like the annotation"
        )


def _check_values(pair: FramePair, seq: SequenceGroundTruth, gt_values: np.ndarray, pred_values: np.ndarray) -> None:
    unknown = np.flatnonzero(pred_values[seq.n_objects + 1 :]) + seq.n_objects + 1
    if unknown.size:
        known = "object 1" if seq.n_objects == 1 else f"objects 1..{seq.n_objects}"
        hint = ""
        if VOID_LABEL in unknown:
            hint = f" ({VOID_LABEL} is not an object id: write object ids, e.g. 1 for the object)"
        raise EvaluationError(
            f"{pair.pred} holds object id(s) {', '.join(map(str, unknown.tolist()))} but the first annotation "
            f"of {seq.name!r} has {known}{hint}"
        )
    if seq.binary:
        other = [v for v in np.flatnonzero(gt_values).tolist() if v not in (0, VOID_LABEL)]
        if other:
            raise EvaluationError(
                f"{pair.gt} holds value(s) {other}, but the first annotation of {seq.name!r} is a binary "
                f"0/{VOID_LABEL} mask: a sequence cannot mix DAVIS 2016 and 2017 annotations"
            )


def evaluate_davis(
    davis_root: Path,
    results_dir: Path,
    *,
    subset: str = "val",
    sequences: Sequence[str] | None = None,
    strict: bool = False,
    resolution: str = RESOLUTION,
    threads: int | None = None,
    progress: bool = False,
    max_frames: int | None = None,
) -> DavisResult:
    """Score `results_dir` against DAVIS ground truth with the semi-supervised protocol.

    Sequences come from `sequences`, else from the set's list. Without `strict`, sequences with no
    results folder are skipped (listed in `missing`); with it, they are an error. With `max_frames`,
    every sequence is cut to its first `max_frames` annotated frames (at least MIN_FRAMES) before it
    is scored, so frames 1..max_frames-2 are scored.
    """
    start = time.perf_counter()
    check_max_frames(max_frames)
    davis_root, results_dir = Path(davis_root), Path(results_dir)
    if not davis_root.is_dir():
        raise EvaluationError(f"DAVIS root {davis_root} not found")
    if not results_dir.is_dir():
        raise EvaluationError(f"results folder {results_dir} not found")
    notes: list[str] = []
    if sequences:
        names = list(dict.fromkeys(sequences))
    else:
        names, source = sequence_list(davis_root, subset, resolution)
        notes.append(f"{len(names)} sequence(s) of set {subset!r} from {source}")
        if not names:
            raise EvaluationError(f"no sequences listed in {source}")
    evaluated: list[SequenceGroundTruth] = []
    missing: list[str] = []
    for name in names:
        seq = ground_truth(davis_root, name, resolution, max_frames)
        if not (results_dir / name).is_dir():
            missing.append(name)
        elif seq is None:
            notes.append(f"sequence {name!r} skipped: its first annotation holds no object")
        else:
            _check_results(results_dir, seq)
            evaluated.append(seq)
    if missing and strict:
        raise EvaluationError(f"{len(missing)} sequence(s) have no results in {results_dir}: {short_list(missing)}")
    if missing:
        notes.append(f"{len(missing)} sequence(s) without results skipped: {short_list(missing)}")
    if not evaluated:
        raise EvaluationError(f"no results in {results_dir} for any of the {len(names)} sequence(s)")

    pairs = [
        FramePair(
            davis_root / "Annotations" / resolution / seq.name / f"{frame}.png",
            results_dir / seq.name / f"{frame}.png",
            seq.n_objects,
            seq.gt_lut,
            ids_lut(seq.n_objects),
        )
        for seq in evaluated
        for frame in seq.frames[1:-1]
    ]
    owners = [seq for seq in evaluated for _ in seq.frames[1:-1]]
    j_rows: list[np.ndarray] = []
    f_rows: list[np.ndarray] = []
    with closing(score_pairs(pairs, threads=threads)) as scores:  # on an error, stop the queued frames
        for pair, seq, frame in tqdm(zip(pairs, owners, scores), total=len(pairs), disable=not progress, unit="frame"):
            _check_values(pair, seq, frame.gt_values, frame.pred_values)
            j_rows.append(frame.j)
            f_rows.append(frame.f)

    objects: list[ObjectResult] = []
    row = 0
    for seq in evaluated:
        frames = seq.frames[1:-1]
        j = np.stack(j_rows[row : row + len(frames)])
        f = np.stack(f_rows[row : row + len(frames)])
        row += len(frames)
        objects.extend(ObjectResult(seq.name, k + 1, frames, j[:, k], f[:, k]) for k in range(seq.n_objects))
    return DavisResult(subset, tuple(objects), tuple(missing), tuple(notes), time.perf_counter() - start)


def write_davis_csv(result: DavisResult, out_dir: Path) -> tuple[Path, Path]:
    """Write `global_results-{set}.csv` and `per-sequence_results-{set}.csv` (the toolkit's names and columns)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    global_path = out_dir / f"global_results-{result.subset}.csv"
    per_sequence_path = out_dir / f"per-sequence_results-{result.subset}.csv"
    with global_path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(GLOBAL_COLUMNS)
        writer.writerow([CSV_FLOAT_FORMAT.format(v) for v in result.global_scores().values()])
    with per_sequence_path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(PER_SEQUENCE_COLUMNS)
        for name, j, f in result.per_sequence():
            writer.writerow([name, CSV_FLOAT_FORMAT.format(j), CSV_FLOAT_FORMAT.format(f)])
    return global_path, per_sequence_path


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header)] + [[v if isinstance(v, str) else f"{v:.6f}" for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(" ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


def format_davis(result: DavisResult) -> str:
    """The global and per-sequence tables as the toolkit prints them."""
    return (
        f"--------------------------- Global results for {result.subset} ---------------------------\n"
        f"{_table(GLOBAL_COLUMNS, [list(result.global_scores().values())])}\n\n"
        f"---------- Per sequence results for {result.subset} ----------\n"
        f"{_table(PER_SEQUENCE_COLUMNS, result.per_sequence())}"
    )
