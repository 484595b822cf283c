"""`vos batch INPUT... --out DIR`: many videos on Ray (thin over `vos.distributed.batch`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vos.cli.options import (
    TRACKER_FLAGS,
    add_detector_arguments,
    add_discovery_arguments,
    add_metrics_arguments,
    add_mqtt_arguments,
    add_renamed_flags,
    add_settings_arguments,
    metrics_from_args,
    mqtt_from_args,
    settings_from_args,
    tracker_from_args,
)
from vos.config import ModelSettings, TrackerConfig
from vos.engine.settings import RaySettings
from vos.errors import ConfigError


def cmd_batch(args: argparse.Namespace) -> int:
    from vos.distributed.batch import jobs_from_inputs, run_batch

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    tracker = tracker_from_args(args)
    found = tracker.discover is not None or tracker.detector is not None
    jobs = jobs_from_inputs(args.inputs, args.annotations, args.prompts, discover=found)
    summary = run_batch(
        jobs, args.out, settings_from_args(args, ModelSettings), tracker,
        settings_from_args(args, RaySettings), max_frames=args.max_frames, progress=not args.quiet,
        metrics=metrics_from_args(args), mqtt=mqtt_from_args(args),
    )  # fmt: skip
    print(f"vos: batch: {summary.text()}", file=sys.stderr)
    return 1 if summary.failed else 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="track many videos on Ray (resumable; one model per worker)",
        description="Track every INPUT (video file or frame folder; a .txt file lists more) with first-frame "
        "prompts from --annotations ROOT (ROOT/NAME/00000.png, pixel value = object id) or --prompts FILE "
        "(JSON: {NAME: [{frame, obj_id, mask: PNG | points + labels | box}]}) or found by --discover, into "
        "OUT/NAME/ as `vos track INPUT --mask ... --out OUT/NAME` would. Complete videos are skipped on a rerun.",
    )  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, frame folders, or .txt files listing them")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="results: DIR/NAME/NNNNN.png + masks.jsonl per video")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--annotations", type=Path, metavar="ROOT", help="first-frame masks: ROOT/NAME/00000.png")
    prompts.add_argument("--prompts", type=Path, metavar="FILE", help="JSON prompts per video name")
    add_settings_arguments(p.add_argument_group("Ray"), RaySettings, list(RaySettings.model_fields))
    add_renamed_flags(p, {"--cpus-per-worker": "--num-cpus", "--num-gpus-per-worker": "--num-gpus"})
    p.add_argument("--max-frames", type=int, metavar="N", help="at most N frames per video")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_metrics_arguments(p)
    add_mqtt_arguments(
        p.add_argument_group("MQTT"),
        "also publish each video's masks to this broker ({topic}/NAME/masks); a video whose messages are lost fails",
    )  # fmt: skip
    add_settings_arguments(p.add_argument_group("model"), ModelSettings, list(ModelSettings.model_fields))
    add_settings_arguments(p.add_argument_group("tracker"), TrackerConfig, TRACKER_FLAGS)
    add_discovery_arguments(p)
    add_detector_arguments(p)
    p.set_defaults(func=cmd_batch)
