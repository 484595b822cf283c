"""`vos view RESULTS_DIR --frames FRAMES`: stored results in the web viewer (`vos.viewer.review`)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from vos.cli.options import add_settings_arguments, settings_from_args, web_from_args
from vos.streams.overlay import OverlayStyle
from vos.viewer.review import ResultsView, serve_results


def cmd_view(args: argparse.Namespace) -> int:
    settings = web_from_args(args.web, args.web_token_file)
    view = ResultsView(args.frames, args.results, settings_from_args(args, OverlayStyle), settings.jpeg_quality)
    asyncio.run(serve_results(view, settings))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view", help="browse saved masks on their frames in the web viewer (a frame slider)",
        description="Serve the viewer page over RESULTS_DIR (NNNNN.png label maps, masks.jsonl) drawn on the "
        "frames of --frames (video file or folder), with a slider over the frames.",
    )  # fmt: skip
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="folder of NNNNN.png label maps (and masks.jsonl)")
    p.add_argument("--frames", type=Path, required=True, metavar="FRAMES_OR_VIDEO", help="the video or frame folder that was tracked")
    p.add_argument("--web", default="127.0.0.1:8080", metavar="[HOST:]PORT", help="where to serve (default %(default)s)")
    p.add_argument("--web-token-file", type=Path, metavar="FILE", help="the viewer's token (or $VOS_WEB__TOKEN); required off loopback")
    add_settings_arguments(p.add_argument_group("overlay style"), OverlayStyle, list(OverlayStyle.model_fields))
    p.set_defaults(func=cmd_view)
