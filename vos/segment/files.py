"""The everything mode over files: images, folders of images and videos in; per image a COCO-style JSON (SA-1B's
annotation layout), a label map PNG and, if asked, an overlay image out (`vos segment`).

Layout under `out`: an image file `a.jpg` -> `a.json`, `a.png` (and `a-overlay.png`); a folder or a video `clip`
-> `clip/<frame name or NNNNN>.json`, `.png`, `-overlay.png`. In the label map a pixel holds the id of the
smallest mask on it (the annotations' "id", 1..N; 0: none), so small objects stay visible over large ones.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vos.errors import ConfigError
from vos.segment.generator import MaskGenerator
from vos.streams.label_map import MAX_LABEL_ID, write_label_map
from vos.streams.messages import Rle
from vos.streams.overlay import OverlayStyle, draw_overlay
from vos.streams.results import open_frames
from vos.streams.sources.frame_folder import FRAME_EXTENSIONS, FrameFolder, read_frame_file

Loader = Callable[[], np.ndarray]
OUTPUTS = {"json": ".json", "labels": ".png", "overlay": "-overlay.png"}


@dataclass(frozen=True)
class SegmentSummary:
    """What `segment_files` did: images written, masks in them, images it could not read, seconds."""

    images: int
    masks: int
    unreadable: int
    seconds: float

    def text(self) -> str:
        skipped = f", {self.unreadable} unreadable (skipped)" if self.unreadable else ""
        return f"{self.masks} masks in {self.images} images{skipped}, {self.seconds:.1f} s"


def images_of(inputs: Sequence[Path]) -> Iterator[tuple[str, Loader, Path | None]]:
    """(output name, loader, file or None for a video frame) per image of `inputs`: image files, folders of images,
    video files. A video stays open while its frames are yielded."""
    for path in inputs:
        if path.is_file() and path.suffix.lower() in FRAME_EXTENSIONS:
            yield path.stem, lambda path=path: read_frame_file(path), path
            continue
        frames, _ = open_frames(path)  # SourceUnavailable, in plain words, for a missing or unreadable input
        if isinstance(frames, FrameFolder):
            yield from ((f"{path.name}/{p.stem}", lambda p=p: read_frame_file(p), p) for p in frames.paths)
            continue
        with frames:
            yield from ((f"{path.stem}/{i:05d}", lambda i=i, v=frames: v[i], None) for i in range(len(frames)))


def output_paths(out: Path, name: str) -> dict[str, Path]:
    """Where one image's results go: json, labels and overlay."""
    return {kind: out / f"{name}{suffix}" for kind, suffix in OUTPUTS.items()}


def check_inputs(inputs: Sequence[Path], out: Path) -> int:
    """The number of images of `inputs`; ConfigError before any work if results would overwrite an input or each
    other (two inputs of one name: frames 00000.jpg of two folders given one by one, a.jpg beside a.png, ...)."""
    owners: dict[str, Path] = {}
    count = 0
    for path in inputs:
        for name, _, source in images_of([path]):
            count += 1
            if source is not None and source.resolve() in {p.resolve() for p in output_paths(out, name).values()}:
                raise ConfigError(f"--out {out} would overwrite the input {source} with a result: choose another folder")
            first = owners.setdefault(name, source or path)
            if first != (source or path):
                raise ConfigError(
                    f"{first} and {source or path} would both write {out / name}.json (results are named after "
                    "their file, or folder/frame): give their folders instead (`vos segment DIR1 DIR2` writes "
                    "DIR1/NAME.json and DIR2/NAME.json), rename one, or segment them into separate --out folders"
                )
    return count


def label_map(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) label map of masks whose ids are their positions + 1, smaller masks drawn over larger ones."""
    if len(masks) > MAX_LABEL_ID:
        raise ValueError(f"a label map holds at most {MAX_LABEL_ID} masks, got {len(masks)}")
    labels = np.zeros(shape, dtype=np.uint8 if len(masks) < 256 else np.uint16)
    for i in sorted(range(len(masks)), key=lambda i: -int(masks[i].sum())):
        labels[masks[i]] = i + 1
    return labels


def coco_annotations(records: list[dict]) -> list[dict]:
    """The generator's binary-mask records -> SA-1B annotations: id, COCO RLE segmentation, bbox, area, scores."""
    out = []
    for i, r in enumerate(records):
        rle = Rle.from_mask(r["segmentation"]).model_dump(mode="json")
        out.append({"id": i + 1, **{k: v for k, v in r.items() if k != "segmentation"}, "segmentation": rle})
    return out


def write_image_results(
    out: Path, name: str, image: np.ndarray, records: list[dict], style: OverlayStyle | None = None,
    file_name: str | None = None,
) -> None:  # fmt: skip
    """`name`.json, `name`.png and, with a style, `name`-overlay.png under `out` for one image's records.
    `file_name`: the image's, as SA-1B records it (with its extension); default `name` (a video's frame)."""
    paths = output_paths(out, name)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    h, w = image.shape[:2]
    image_info = {"file_name": file_name or name, "width": w, "height": h}
    document = {"image": image_info, "annotations": coco_annotations(records)}
    paths["json"].write_text(json.dumps(document))
    labels = label_map([r["segmentation"] for r in records], (h, w))
    write_label_map(paths["labels"], labels)
    if style is not None:
        Image.fromarray(draw_overlay(image, labels, None, style)).save(paths["overlay"])


def segment_files(
    generator: MaskGenerator,
    inputs: Sequence[Path],
    out: Path,
    points: Sequence = (),
    boxes: Sequence = (),
    style: OverlayStyle | None = None,
    progress: bool = True,
    total: int | None = None,
) -> SegmentSummary:
    """Every image of `inputs` through `generator` (or, with prompts, its `prompted`), results written under `out`.
    An unreadable image is reported and skipped; the others are still written. `total`: what `check_inputs` returned
    for these inputs, if the caller already called it."""
    from tqdm import tqdm

    if generator.settings.output_mode != "binary_mask":
        raise ConfigError("segment_files writes its own COCO RLEs: give it a generator with output_mode binary_mask")
    if total is None:  # not checked yet (`check_inputs` opens every video: once is enough)
        total = check_inputs(inputs, out)
    start, images, masks, unreadable = time.perf_counter(), 0, 0, 0
    for name, load, source in tqdm(images_of(inputs), total=total, unit="image", disable=not progress):
        try:
            image = load()
        except ValueError as e:
            tqdm.write(f"vos: skipped: {e}", file=sys.stderr)
            unreadable += 1
            continue
        if len(points) or len(boxes):
            try:
                records = generator.prompted(image, points, boxes)
            except ValueError as e:
                raise ConfigError(f"{name}: {e}") from None
        else:
            records = generator.generate(image)
        write_image_results(out, name, image, records, style, file_name=source.name if source is not None else None)
        images, masks = images + 1, masks + len(records)
    return SegmentSummary(images, masks, unreadable, time.perf_counter() - start)
