"""`vos segment INPUT... --out DIR`: every object of images, folders and videos as masks (thin over
`vos.segment.files.segment_files`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vos.cli.options import add_settings_arguments, settings_from_args
from vos.config import MaskGeneratorSettings, ModelSettings
from vos.errors import ConfigError
from vos.streams.overlay import OverlayStyle

GENERATOR_FLAGS = [f for f in MaskGeneratorSettings.model_fields if f != "output_mode"]
"""The generator's settings with a flag (the files hold COCO RLEs and label maps whatever the output mode)."""


def _numbers(text: str, count: int, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise ConfigError(f"{flag} takes {count} numbers separated by commas, got {text!r}")
    return values


def cmd_segment(args: argparse.Namespace) -> int:
    from vos.build import load_from_settings
    from vos.segment.files import check_inputs, segment_files
    from vos.segment.generator import MaskGenerator

    points = [_numbers(p, 2, "--point") for p in args.point or ()]
    boxes = [_numbers(b, 4, "--box") for b in args.box or ()]
    settings = settings_from_args(args, MaskGeneratorSettings)
    style = settings_from_args(args, OverlayStyle) if args.render else None
    model_settings = settings_from_args(args, ModelSettings)
    total = check_inputs(args.inputs, args.out)  # refused before the model loads
    generator = MaskGenerator(load_from_settings(model_settings), settings=settings)
    summary = segment_files(generator, args.inputs, args.out, points, boxes, style, progress=not args.quiet, total=total)
    print(f"vos: segment: {summary.text()} -> {args.out}", file=sys.stderr)
    return 1 if summary.unreadable else 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment", help="every object of images or videos as masks (SAM's everything mode), or masks of prompts",
        description="Segment every object of each INPUT (an image, a folder of images, or a video: every frame) "
        "from a grid of clicks, as Meta's SAM2AutomaticMaskGenerator; with --point or --box, the masks of those "
        "prompts instead. Per image, under --out: NAME.json (SA-1B annotations: COCO RLE segmentation, bbox, "
        "area, predicted_iou, stability_score, point_coords, crop_box), NAME.png (label map: pixel = annotation "
        "id, the smallest mask on top) and, with --render, NAME-overlay.png. A folder or video INPUT gets a "
        "subfolder of that name.",
    )  # fmt: skip
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files, folders of images, video files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder of the JSON, label maps, overlays")
    p.add_argument("--point", action="append", metavar="X,Y", help="a click in pixels: its mask (repeatable)")
    p.add_argument("--box", action="append", metavar="X0,Y0,X1,Y1", help="a box in pixels: its mask (repeatable)")
    p.add_argument("--render", action="store_true", help="also write NAME-overlay.png: the masks drawn on the image")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_settings_arguments(p.add_argument_group("everything mode"), MaskGeneratorSettings, GENERATOR_FLAGS)
    add_settings_arguments(p.add_argument_group("overlay (--render)"), OverlayStyle, list(OverlayStyle.model_fields))
    add_settings_arguments(p.add_argument_group("model"), ModelSettings, list(ModelSettings.model_fields))
    p.set_defaults(func=cmd_segment)
