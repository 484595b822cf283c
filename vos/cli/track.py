"""`vos track SOURCE ...` (one stream, prompts from the command line and/or MQTT) and `vos serve CONFIG`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from vos.cli.options import (
    TRACKER_FLAGS,
    WEB_TOKEN_ENV,
    add_detector_arguments,
    add_discovery_arguments,
    add_metrics_arguments,
    add_mqtt_arguments,
    add_settings_arguments,
    checked,
    metrics_from_args,
    mqtt_from_args,
    settings_from_args,
    tracker_from_args,
    web_from_args,
)
from vos.config import ModelSettings, TrackerConfig
from vos.engine.settings import EngineConfig, RaySettings, StreamPrompt, StreamSettings, load_engine_config
from vos.errors import ConfigError, SourceUnavailable, plain_problems
from vos.streams.label_map import read_mask_png
from vos.streams.messages import Rle
from vos.streams.overlay import OverlayStyle
from vos.streams.sources import LiveSettings
from vos.streams.sources.base import SourceError

if TYPE_CHECKING:
    from vos.distributed.serve import RayServe
    from vos.engine.engine import Engine
    from vos.engine.stream import StreamReport


_ID_VALUE = re.compile(r"^\s*(\d+)\s*=\s*(.+)$")


def _split(spec: str, flag: str, what: str) -> tuple[int, str]:
    m = _ID_VALUE.match(spec)
    if not m:
        raise ConfigError(f"{flag} {spec!r}: expected ID={what}")
    return int(m.group(1)), m.group(2).strip()


def _numbers(text: str, flag: str, spec: str, counts: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise ConfigError(f"{flag} {spec!r}: expected {' or '.join(map(str, counts))} comma-separated numbers")
    return values


def prompts_from_args(masks: list[str], points: list[str], boxes: list[str], frame: int = 0) -> list[StreamPrompt]:
    """--mask ID=PNG, --point ID=X,Y[,LABEL] (repeatable per object), --box ID=X0,Y0,X1,Y1 -> one prompt per object."""
    fields: dict[int, dict] = {}
    for spec in masks:
        obj_id, path = _split(spec, "--mask", "PNG")
        fields.setdefault(obj_id, {})["mask"] = Rle.from_mask(read_mask_png(Path(path), obj_id))
    for spec in points:
        obj_id, text = _split(spec, "--point", "X,Y[,LABEL]")
        x, y, *label = _numbers(text, "--point", spec, (2, 3))
        f = fields.setdefault(obj_id, {})
        f.setdefault("points", []).append((x, y))
        f.setdefault("labels", []).append(int(label[0]) if label else 1)
    for spec in boxes:
        obj_id, text = _split(spec, "--box", "X0,Y0,X1,Y1")
        fields.setdefault(obj_id, {})["box"] = tuple(_numbers(text, "--box", spec, (4,)))
    prompts = []
    for obj_id, f in sorted(fields.items()):
        try:
            prompts.append(StreamPrompt(obj_id=obj_id, frame=frame, **f))
        except ValidationError as e:
            raise ConfigError(f"prompt for object {obj_id}: {plain_problems(e)}") from None
    return prompts


async def run_engine(engine: Engine | RayServe, web_wait: bool = False) -> int:
    """Runs the engine (or the Ray driver); SIGTERM/SIGINT stop it cleanly (masks flushed, status "stopped"). The exit code.

    With a viewer its address is printed once it listens; `web_wait` starts the sources only when a page has
    connected, and keeps the viewer up after they end, until Ctrl-C (a short file can be looked at)."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()

    def stop() -> None:
        interrupted.set()
        engine.stop()

    async with engine:
        signals = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop)
                signals.append(sig)
        try:
            viewer = getattr(engine, "viewer", None)
            if viewer is not None:
                print(f"vos: viewer on {viewer.address}", file=sys.stderr, flush=True)
            if viewer is not None and web_wait:
                print("vos: waiting for a page to connect before starting (Ctrl-C quits)", file=sys.stderr, flush=True)
                await _first(viewer.connected.wait(), interrupted.wait())
            reports = [] if interrupted.is_set() else await engine.run()
            if viewer is not None and web_wait and not interrupted.is_set():
                print(f"vos: done; the viewer stays on {viewer.url} until Ctrl-C", file=sys.stderr, flush=True)
                await interrupted.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
    if not reports:
        print("vos: stopped before any frame", file=sys.stderr)
        return 130
    return _exit_code(reports)


async def _first(*waits) -> None:
    """Returns when the first of `waits` is done; cancels the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _exit_code(reports: list[StreamReport]) -> int:
    code = 0
    for report in reports:
        if report.state == "stopped":
            print(f"vos: {report.stream}: stopped; {report.summary()}", file=sys.stderr)
            code = code or 130
        elif report.error is not None:
            error = SourceUnavailable(str(report.error)) if isinstance(report.error, SourceError) else report.error
            print(f"vos: error: {report.stream}: {error}", file=sys.stderr)
            code = code or getattr(error, "exit_code", 1)
        else:
            print(f"vos: {report.summary()}", file=sys.stderr)
    return code


def cmd_track(args: argparse.Namespace) -> int:
    from vos.engine.engine import Engine

    prompts = prompts_from_args(args.mask, args.point, args.box, frame=args.prompt_frame)
    tracker = tracker_from_args(args)
    if not prompts and not args.mqtt and not args.web and tracker.discover is None and tracker.detector is None:
        raise ConfigError(
            "nothing to track: give --mask, --point or --box, --discover or --detector, or --mqtt / --web to "
            "receive prompts"
        )
    if args.web_wait and not args.web:
        raise ConfigError("--web-wait waits for the viewer's page: give --web PORT too")
    if not args.out and not args.mqtt and not args.render and not args.web:
        raise ConfigError("nothing would be kept or shown: give --out DIR, --render FILE, --mqtt URL and/or --web PORT")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    stream = checked(
        StreamSettings, source=args.source, id=args.stream, out=args.out, render=args.render,
        max_frames=args.max_frames, prompts=prompts,
    )  # fmt: skip
    mqtt = mqtt_from_args(args)
    config = checked(
        EngineConfig, model=settings_from_args(args, ModelSettings), tracker=tracker,
        mqtt=mqtt, live=settings_from_args(args, LiveSettings), max_batch=1, streams=[stream],
        web=web_from_args(args.web, args.web_token_file), metrics=metrics_from_args(args),
        overlay=settings_from_args(args, OverlayStyle),
    )  # fmt: skip
    return asyncio.run(run_engine(Engine(config, progress=not args.quiet), web_wait=args.web_wait))


def cmd_serve(args: argparse.Namespace) -> int:
    from vos.engine.engine import Engine

    config: EngineConfig = load_engine_config(args.config)
    if args.web is not None or args.web_token_file is not None:
        config = config.model_copy(update={"web": web_from_args(args.web, args.web_token_file)})
    if args.metrics_port is not None:
        config = config.model_copy(update={"metrics": metrics_from_args(args)})
    if args.ray is not None:
        ray = config.ray or RaySettings()
        config = config.model_copy(update={"ray": ray.model_copy(update={"address": args.ray or ray.address})})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.ray is not None:
        from vos.distributed.serve import RayServe

        return asyncio.run(run_engine(RayServe(config)))
    return asyncio.run(run_engine(Engine(config, wait_for_cameras=True)))


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track", help="track objects through a video, folder of frames, RTSP stream or webcam",
        description="Track objects through SOURCE (video file, folder of frames, rtsp:// URL, /dev/videoN, "
        "lavfi:GRAPH); write label-map PNGs and/or publish masks over MQTT. Prompts: --mask/--point/--box "
        "on --prompt-frame, and any time over MQTT ({topic}/{stream}/prompts).",
    )
    p.add_argument("source", help="video file, folder of frames, rtsp:// URL, /dev/videoN or lavfi:GRAPH")
    prompts = p.add_argument_group("prompts")
    prompts.add_argument("--mask", action="append", default=[], metavar="ID=PNG", help="mask prompt: nonzero pixels (or pixels == ID in a label map)")
    prompts.add_argument("--point", action="append", default=[], metavar="ID=X,Y[,LABEL]", help="click (label 1 object, 0 background); repeat for more")
    prompts.add_argument("--box", action="append", default=[], metavar="ID=X0,Y0,X1,Y1", help="box prompt")
    prompts.add_argument("--prompt-frame", type=int, default=0, metavar="N", help="frame the prompts apply to (default 0)")
    out = p.add_argument_group("outputs (at least one)")
    out.add_argument("--out", type=Path, metavar="DIR", help="write DIR/NNNNN.png label maps and DIR/masks.jsonl")
    out.add_argument("--render", type=Path, metavar="FILE", help="write an overlay video of the masks (H.264: .mp4, .mkv, .mov)")
    add_mqtt_arguments(out, "publish masks to this broker, take prompts from it (mqtts: TLS)")
    out.add_argument("--stream", help="stream id in topics (default: the source's name)")
    viewer = p.add_argument_group("live web viewer")
    viewer.add_argument("--web", metavar="[HOST:]PORT", help="serve the live viewer (status, overlays, click to prompt); default host 127.0.0.1")
    viewer.add_argument("--web-token-file", type=Path, metavar="FILE", help=f"token the viewer asks for (or ${WEB_TOKEN_ENV}); required off loopback")
    viewer.add_argument(
        "--web-wait", action="store_true",
        help="start the source only once a page has connected, and keep the viewer up after it ends, until Ctrl-C",
    )  # fmt: skip
    add_metrics_arguments(p)
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_settings_arguments(p.add_argument_group("model"), ModelSettings, list(ModelSettings.model_fields))
    add_settings_arguments(p.add_argument_group("tracker"), TrackerConfig, TRACKER_FLAGS)
    add_discovery_arguments(p)
    add_detector_arguments(p)
    add_settings_arguments(p.add_argument_group("live sources"), LiveSettings, list(LiveSettings.model_fields))
    style = p.add_argument_group("overlay style (--render, --web)")
    add_settings_arguments(style, OverlayStyle, list(OverlayStyle.model_fields))
    p.set_defaults(func=cmd_track)

    s = sub.add_parser(
        "serve", help="run the streams of an engine config (prompts over MQTT)",
        description="Long-running service: the streams, model and MQTT settings of CONFIG (YAML); "
        "VOS_... environment variables override it (VOS_MQTT__HOST=..., nested with __). A camera that "
        "is down keeps being retried while the other streams run.",
    )
    s.add_argument("config", type=Path, help="engine config YAML (see configs/engine.yaml)")
    s.add_argument("--web", metavar="[HOST:]PORT", help="serve the live viewer (overrides the config's web:)")
    s.add_argument("--web-token-file", type=Path, metavar="FILE", help=f"the viewer's token (or ${WEB_TOKEN_ENV})")
    add_metrics_arguments(s)
    s.add_argument(
        "--ray", nargs="?", const="", metavar="ADDRESS",
        help="run each stream in a Ray actor, restarted if it dies (ADDRESS: a cluster; none: a local Ray; "
        "resources per stream from the config's ray: section); needs vos[ray]",
    )  # fmt: skip
    s.set_defaults(func=cmd_serve)
