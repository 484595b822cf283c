"""`vos render FRAMES_OR_VIDEO RESULTS_DIR --out overlay.mp4|DIR`: saved masks drawn on their frames
(`vos.streams.results.render_results`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vos.cli.options import add_settings_arguments, settings_from_args
from vos.errors import ConfigError
from vos.streams.overlay import OverlayStyle
from vos.streams.results import IMAGE_FORMATS, render_results


def cmd_render(args: argparse.Namespace) -> int:
    style = settings_from_args(args, OverlayStyle)
    if args.fps is not None and not args.fps > 0:
        raise ConfigError("--fps must be positive")
    summary = render_results(
        args.frames, args.results, args.out, style, fps=args.fps, image_format=args.image_format, progress=not args.quiet
    )
    skipped = [f"{n} {what}" for n, what in ((summary.missing, "without a label map"), (summary.unreadable, "unreadable")) if n]
    note = f" (skipped: {', '.join(skipped)})" if skipped else ""
    print(f"vos: rendered {summary.frames} frames to {args.out}{note}", file=sys.stderr)
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render", help="draw saved masks on their frames: an overlay video or images",
        description="Draw the label maps of RESULTS_DIR (NNNNN.png by frame index, as `vos track --out` and "
        "`vos bench davis` write them; scores from masks.jsonl if present) on the frames of FRAMES_OR_VIDEO "
        "into --out: an H.264 video (.mp4, .mkv, .mov) or a folder of images.",
    )
    p.add_argument("frames", type=Path, metavar="FRAMES_OR_VIDEO", help="the video file or folder of frames that was tracked")
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="folder of NNNNN.png label maps (and masks.jsonl)")
    p.add_argument("--out", type=Path, required=True, metavar="VIDEO|DIR", help="overlay video (.mp4, .mkv, .mov) or folder of images")
    p.add_argument("--fps", type=float, metavar="N", help="frame rate of a video made from a folder of frames (default 25)")
    p.add_argument("--image-format", choices=IMAGE_FORMATS, default="png", help="images of a folder --out (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_settings_arguments(p.add_argument_group("overlay style"), OverlayStyle, list(OverlayStyle.model_fields))
    p.set_defaults(func=cmd_render)
