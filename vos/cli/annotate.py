"""`vos annotate INPUT... --detector FILE --out DIR`: a dataset from a detector and the segmenter (thin over
`vos.annotation.annotate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vos.cli.options import add_detector_arguments, add_settings_arguments, detector_from_args, settings_from_args
from vos.config import ModelSettings
from vos.errors import ConfigError


def cmd_annotate(args: argparse.Namespace) -> int:
    from vos.annotation.annotate import Annotator, annotate, check_outputs, items_of
    from vos.build import load_from_settings
    from vos.detection.detector import Detector

    settings = detector_from_args(args)
    if settings is None:
        raise ConfigError("vos annotate labels what a detector finds: give --detector FILE (an ONNX file)")
    items = items_of(args.inputs, frames=args.frames)
    check_outputs(items, args.out)  # refused before anything loads
    detector = Detector(settings)
    model = load_from_settings(settings_from_args(args, ModelSettings))
    annotator = Annotator(detector, model, args.out, detect_every=settings.every_n_frames)
    summary = annotate(items, annotator, progress=not args.quiet)
    print(f"vos: annotate: {summary.text()} -> {args.out}", file=sys.stderr)
    return 1 if summary.unreadable else 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "annotate", help="a segmentation dataset from a detector's boxes: images, and videos with one id per object",
        description="Label each INPUT (an image, a folder of images, a video; with --frames, folders are videos' "
        "frames) with the masks of what --detector finds. Images: OUT/labels/NAME.txt (YOLO segmentation: class "
        "and normalised polygon per line), OUT/records/NAME.json and OUT/instances.json (COCO, RLE). Videos: "
        "detections on frame 0 and every --detect-every frames become objects tracked in between; "
        "OUT/CLIP/labels/FRAME.txt, OUT/CLIP/instances.json (with track_id) and OUT/CLIP/masklets.json (SA-V "
        "layout). Finished images and videos are skipped on a rerun.",
    )  # fmt: skip
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files, folders of images, video files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the dataset's folder")
    p.add_argument("--frames", action="store_true", help="folders are the frames of a video each (default: images)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_detector_arguments(p, help="the detector (an ONNX file of a YOLO layout)", exclude=("retire_after",))
    add_settings_arguments(p.add_argument_group("model"), ModelSettings, list(ModelSettings.model_fields))
    p.set_defaults(func=cmd_annotate)
