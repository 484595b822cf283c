"""Auto-annotation: a detector's boxes prompt the segmenter, and the masks become a dataset (`vos annotate`).

    summary = vos.auto_annotate("images/", det_model="yolo11n.onnx", sam_model="edgetam.pt", output_dir="out/")

Images (files, or folders of them): per image the detector's boxes are segmented by the image predictor and written
as `OUT/labels/NAME.txt` (YOLO segmentation) and `OUT/records/NAME.json` (its COCO annotations); `OUT/instances.json`
gathers them with the categories. Videos (and, with `frames`, folders of frames): the tracker runs with the detector
(`vos.tracking.detection`: detections on frame 0 and every `detect_every` frames become objects, masklets tracked
between), written per frame as `OUT/CLIP/labels/FRAME.txt`, with `OUT/CLIP/instances.json` (a `track_id` per
annotation) and `OUT/CLIP/masklets.json` (SA-V's layout). Rerun on the same output, finished images and clips are
skipped; an unreadable one is reported and skipped; outputs that would land among the inputs are refused.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vos.annotation.formats import coco_annotation, coco_document, masklet_document, yolo_line
from vos.build import load_model
from vos.config import DetectorSettings
from vos.detection.detector import Detector
from vos.errors import ConfigError, SourceUnavailable
from vos.image_predictor import ImagePredictor
from vos.modeling.sam2 import SAM2Model
from vos.streams.messages import Rle
from vos.streams.results import open_frames
from vos.streams.sources.frame_folder import FRAME_EXTENSIONS, FrameFolder, read_frame_file
from vos.tracking.tracker import Tracker

MASKLETS = "masklets.json"


@dataclass(frozen=True)
class Item:
    """One unit of work: an image (`path` a file) or a clip (a video file or a folder of frames)."""

    name: str  # where its results go under the output folder
    path: Path
    clip: bool


@dataclass(frozen=True)
class AnnotateSummary:
    images: int  # annotated in this run
    clips: int
    frames: int  # of the clips
    objects: int  # labels written (image objects, and clip objects once each)
    done_before: int  # images and clips skipped: finished by an earlier run
    unreadable: int  # images and clips skipped: could not be read
    seconds: float

    def text(self) -> str:
        parts = [f"{self.objects} objects in {self.images} images and {self.clips} clips ({self.frames} frames)"]
        if self.done_before:
            parts.append(f"{self.done_before} done before (skipped)")
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable (skipped)")
        return ", ".join(parts) + f", {self.seconds:.1f} s"


def items_of(inputs: Sequence[Path], frames: bool = False) -> list[Item]:
    """The images and clips of `inputs`: image files; folders of images (with `frames`: each a clip); other files
    are videos. ConfigError for a missing input or a folder with no image."""
    items = []
    for path in inputs:
        if not path.exists():
            raise ConfigError(f"no such image, video or folder: {path}")
        if path.is_dir() and frames:
            items.append(Item(path.name, path, True))
        elif path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS)
            if not images:
                raise ConfigError(f"no {'/'.join(FRAME_EXTENSIONS)} images in {path}")
            items.extend(Item(f"{path.name}/{p.stem}", p, False) for p in images)
        elif path.suffix.lower() in FRAME_EXTENSIONS:
            items.append(Item(path.stem, path, False))
        else:
            items.append(Item(path.stem, path, True))
    return items


def check_outputs(items: Sequence[Item], out: Path) -> None:
    """ConfigError before any work if two inputs would write the same results, or results would land among the
    inputs (the output folder an input folder, or inside one)."""
    owners: dict[str, Path] = {}
    resolved_out = out.resolve()
    for item in items:
        if owners.setdefault(item.name, item.path) != item.path:
            raise ConfigError(
                f"{owners[item.name]} and {item.path} would both write {out / item.name}: give their folders "
                "instead, rename one, or annotate them into separate output folders"
            )
        folder = (item.path if item.path.is_dir() else item.path.parent).resolve()
        if resolved_out == folder or folder in resolved_out.parents and item.path.is_dir():
            raise ConfigError(f"the output {out} would put labels among the inputs in {folder}: choose another folder")


def _write(path: Path, text: str) -> None:
    """Written whole or not at all (a rerun after a crash sees no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


class Annotator:
    """A detector and a segmenter writing a dataset under `out`."""

    def __init__(self, detector: Detector, model: SAM2Model, out: Path, detect_every: int = 10) -> None:
        self.detector = detector
        self.model = model
        self.out = Path(out)
        self.detect_every = detect_every
        self.predictor = ImagePredictor(model)

    def image(self, item: Item) -> int:
        """Annotates one image; the number of objects written."""
        image = read_frame_file(item.path)
        h, w = image.shape[:2]
        found = self.detector(image)
        masks = np.zeros((0, h, w), bool)
        if len(found):
            self.predictor.set_image(image)
            masks = self.predictor.predict(box=found.boxes, multimask_output=False)[0].reshape(len(found), h, w)
        lines, annotations = [], []
        for mask, cls, score in zip(masks, found.classes, found.scores):
            line = yolo_line(int(cls), mask)
            if line is not None:
                lines.append(line)
                annotations.append(coco_annotation(0, 0, mask, int(cls), score))
        record = {"image": {"file_name": str(item.path), "width": w, "height": h}, "annotations": annotations}
        _write(self.out / "records" / f"{item.name}.json", json.dumps(record))
        _write(self.out / "labels" / f"{item.name}.txt", "".join(f"{line}\n" for line in lines))
        return len(lines)

    def image_done(self, item: Item) -> bool:
        return (self.out / "labels" / f"{item.name}.txt").is_file() and (
            self.out / "records" / f"{item.name}.json"
        ).is_file()

    def write_instances(self, items: Sequence[Item]) -> None:
        """`instances.json`: the records of every image of `items` that has one."""
        images, annotations = [], []
        for item in items:
            record_file = self.out / "records" / f"{item.name}.json"
            if item.clip or not record_file.is_file():
                continue
            record = json.loads(record_file.read_text(encoding="utf-8"))
            image_id = len(images) + 1
            images.append({"id": image_id, **record["image"]})
            annotations.extend({**a, "image_id": image_id} for a in record["annotations"])
        if images:
            _write(self.out / "instances.json", json.dumps(coco_document(images, annotations, self.detector.names)))

    def clip_done(self, item: Item) -> bool:
        return (self.out / item.name / MASKLETS).is_file()

    def clip(self, item: Item, progress: bool = True) -> tuple[int, int]:
        """Annotates one clip; (frames, objects) written. SourceUnavailable if it cannot be opened."""
        from tqdm import tqdm

        frames, _ = open_frames(item.path)
        names = [p.stem for p in frames.paths] if isinstance(frames, FrameFolder) else None
        detector = self.detector.with_tracking(every_n_frames=self.detect_every, retire_after=0)
        tracker = Tracker(self.model, detector=detector)
        folder = self.out / item.name
        class_index = {v: k for k, v in self.detector.names.items()}
        images, annotations, masklets, classes = [], [], [], {}
        hw = None
        try:
            for t in tqdm(range(len(frames)), desc=item.name, unit="frame", disable=not progress, leave=False):
                try:
                    frame = frames[t]
                except ValueError as e:  # one unreadable frame: reported, the clip goes on
                    tqdm.write(f"vos: {item.name}: frame {t} skipped: {e}", file=sys.stderr)
                    masklets.append({})
                    continue
                hw = hw or frame.shape[:2]
                result = tracker.step(frame)
                frame_name = names[t] if names else f"{t:05d}"
                images.append({"id": t + 1, "file_name": frame_name, "width": frame.shape[1], "height": frame.shape[0]})
                lines, rles = [], {}
                for obj_id, mask in sorted(result.masks.items()):
                    if obj_id not in result.classes:
                        continue
                    name = result.classes[obj_id]
                    cls = class_index[name]
                    classes[obj_id] = name
                    rles[obj_id] = Rle.from_mask(mask).model_dump(mode="json")
                    line = yolo_line(cls, mask)
                    if line is not None:
                        lines.append(line)
                        score = result.class_scores[obj_id]
                        annotations.append(coco_annotation(0, t + 1, mask, cls, score, rles[obj_id], track_id=obj_id))
                masklets.append(rles)
                _write(folder / "labels" / f"{frame_name}.txt", "".join(f"{line}\n" for line in lines))
        finally:
            if hasattr(frames, "close"):
                frames.close()
        _write(folder / "instances.json", json.dumps(coco_document(images, annotations, self.detector.names)))
        if hw is not None:
            _write(folder / MASKLETS, json.dumps(masklet_document(item.name, hw, masklets, classes)))
        return len(images), len(classes)


def _detector(det_model: str | Path | Detector | DetectorSettings, **options) -> Detector:
    if isinstance(det_model, Detector):
        return Detector(det_model.settings, **options) if options else det_model
    if isinstance(det_model, DetectorSettings):
        return Detector(det_model, **options)
    return Detector(det_model, **{"conf": 0.25, "iou": 0.45, **options})


def _segmenter(sam_model: str | Path | SAM2Model, device: str) -> SAM2Model:
    if isinstance(sam_model, SAM2Model):
        return sam_model
    if Path(sam_model).is_file():
        return load_model(checkpoint=sam_model, device=device)
    return load_model(str(sam_model), device=device)


def auto_annotate(
    data: str | Path | Sequence[str | Path],
    det_model: str | Path | Detector | DetectorSettings,
    sam_model: str | Path | SAM2Model = "edgetam",
    device: str = "cpu",
    output_dir: str | Path | None = None,
    *,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    classes: Sequence[str | int] | None = None,
    detect_every: int = 10,
    frames: bool = False,
    progress: bool = True,
) -> AnnotateSummary:
    """Annotate images and videos with a detector (an ONNX file of a YOLO layout) and a SAM 2-class segmenter (a
    loaded model, a checkpoint file or a model name); Ultralytics' `auto_annotate` arguments, for videos too.
    `output_dir` defaults to `DATA_auto_annotate_labels` beside the (first) input, as Ultralytics'. `conf`, `iou`,
    `max_det` and `classes` change a loaded detector's settings, or those of a file (there Ultralytics' defaults:
    conf 0.25, iou 0.45)."""
    inputs = [Path(p) for p in ([data] if isinstance(data, (str, Path)) else data)]
    if not inputs:
        raise ConfigError("nothing to annotate: give images, folders or videos")
    out = Path(output_dir) if output_dir else inputs[0].parent / f"{inputs[0].stem}_auto_annotate_labels"
    items = items_of(inputs, frames)
    check_outputs(items, out)
    given = {
        "conf": conf,
        "iou": iou,
        "max_det": max_det,
        "classes": None if classes is None else [str(c) for c in classes],
    }
    detector = _detector(det_model, **{k: v for k, v in given.items() if v is not None})
    return annotate(items, Annotator(detector, _segmenter(sam_model, device), out, detect_every), progress)


def annotate(items: list[Item], annotator: Annotator, progress: bool = True) -> AnnotateSummary:
    """Every item through `annotator` (those finished before skipped), then `instances.json` of the images."""
    from tqdm import tqdm

    start = time.perf_counter()
    images = clips = frames = objects = done = unreadable = 0
    for item in tqdm(items, unit="input", disable=not progress):
        if annotator.clip_done(item) if item.clip else annotator.image_done(item):
            done += 1
            continue
        try:
            if item.clip:
                n_frames, n_objects = annotator.clip(item, progress)
                clips, frames, objects = clips + 1, frames + n_frames, objects + n_objects
            else:
                objects += annotator.image(item)
                images += 1
        except (ValueError, SourceUnavailable) as e:
            tqdm.write(f"vos: skipped {item.path}: {e}", file=sys.stderr)
            unreadable += 1
    annotator.write_instances(items)
    return AnnotateSummary(images, clips, frames, objects, done, unreadable, time.perf_counter() - start)
