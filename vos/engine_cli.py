"""`vos track SOURCE ...` (one stream, prompts from the command line and/or MQTT) and `vos serve CONFIG`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from vos.cli_options import add_speed_arguments, apply_threads
from vos.config import SUPPORTED_IMAGE_SIZES, TrackerConfig
from vos.engine import InferenceQueue, StreamReport, StreamRunner
from vos.engine_config import EngineConfig, LiveSettings, load_engine_config
from vos.errors import BrokerUnavailable, ConfigError, SourceUnavailable
from vos.streams.folder_sink import FolderSink
from vos.streams.label_map import read_label_map
from vos.streams.messages import AddPrompt, Rle
from vos.streams.mqtt import MqttLink, MqttSettings, MqttUnavailable, check_topic_level
from vos.streams.source import FrameSource, SourceError
from vos.streams.sources import open_source

log = logging.getLogger("vos")

DEFAULT_MQTT_PORT = 1883
DEFAULT_TOPIC = "vos"
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


def read_mask_png(path: Path, obj_id: int) -> np.ndarray:
    """A mask prompt from a PNG: a binary image's nonzero pixels, or a label map's pixels equal to `obj_id`."""
    try:
        labels = read_label_map(path)
    except FileNotFoundError:
        raise ConfigError(f"--mask {obj_id}: no such file {path}") from None
    except OSError as e:
        raise ConfigError(f"--mask {obj_id}: cannot read {path} as an image: {e}") from None
    if labels.ndim == 3:
        labels = labels[..., :3].max(axis=2)
    values = set(np.unique(labels).tolist()) - {0}
    mask = labels != 0 if len(values) <= 1 else labels == obj_id
    if not mask.any():
        raise ConfigError(f"--mask {obj_id}: {path} has no pixel of object {obj_id}")
    return mask


def prompts_from_args(masks: list[str], points: list[str], boxes: list[str]) -> list[AddPrompt]:
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
            prompts.append(AddPrompt(obj_id=obj_id, **f))
        except ValueError as e:
            raise ConfigError(f"prompt for object {obj_id}: {e}") from None
    return prompts


def mqtt_settings_from_url(url: str, prefix: str, qos: int) -> MqttSettings:
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme != "mqtt" or not parsed.hostname:
        raise ConfigError(f"--mqtt {url!r}: expected mqtt://HOST[:PORT]")
    if set("+#\0") & set(prefix):
        raise ConfigError(f"--topic {prefix!r}: a topic prefix cannot hold + # or NUL")
    try:
        return MqttSettings(
            host=parsed.hostname, port=parsed.port or DEFAULT_MQTT_PORT, prefix=prefix.strip("/"), qos=qos,
            username=parsed.username, password=parsed.password,
        )
    except ValueError as e:
        raise ConfigError(f"--mqtt/--topic: {e}") from None


def open_checked(spec: str, max_frames: int | None, name: str | None, live: LiveSettings) -> FrameSource:
    """A source that was opened once (SourceUnavailable with the reason if it cannot be read)."""
    try:
        source = open_source(spec, max_frames=max_frames, name=name, **live.model_dump())
        source.open()
    except SourceError as e:
        raise SourceUnavailable(str(e)) from None
    return source


async def start_mqtt(settings: MqttSettings, stream: str) -> MqttLink:
    link = MqttLink(settings, stream)
    try:
        await link.start()
    except MqttUnavailable as e:
        raise BrokerUnavailable(str(e)) from None
    return link


async def run_runners(runners: list[StreamRunner], inference: InferenceQueue) -> list[StreamReport | BaseException]:
    """Runs every stream to its end; SIGTERM/SIGINT stop them cleanly (masks flushed, status published)."""
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(r.run(), name=f"stream-{r.stream}") for r in runners]
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, lambda: [t.cancel() for t in tasks])
        except (NotImplementedError, RuntimeError):
            pass
    try:
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await inference.close()


def _summary(report: StreamReport) -> str:
    parts = [f"{report.stream}: {report.frames} frames in {report.seconds:.1f} s ({report.fps:.2f} frames/s)"]
    if report.dropped_frames:
        parts.append(f"{report.dropped_frames} stale live frames dropped")
    if report.source_reconnects:
        parts.append(f"{report.source_reconnects} source reconnects")
    if report.refused_prompts:
        parts.append(f"{report.refused_prompts} prompts refused")
    if report.published or report.lost_messages:
        parts.append(f"{report.published} MQTT messages published, {report.lost_messages} lost")
    return ", ".join(parts)


def _report(results: list[StreamReport | BaseException], runners: list[StreamRunner]) -> int:
    code = 0
    for runner, result in zip(runners, results):
        if isinstance(result, asyncio.CancelledError):
            print(f"vos: {runner.stream}: stopped; {_summary(runner.report)}", file=sys.stderr)
            code = code or 130
        elif isinstance(result, BaseException):
            error = SourceUnavailable(str(result)) if isinstance(result, SourceError) else result
            print(f"vos: error: {runner.stream}: {error}", file=sys.stderr)
            code = code or getattr(error, "exit_code", 1)
        else:
            print(f"vos: {_summary(result)}", file=sys.stderr)
    return code


def cmd_track(args: argparse.Namespace) -> int:
    from vos.build import load_model
    from vos.tracker import Tracker

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    prompts = prompts_from_args(args.mask, args.point, args.box)
    if not prompts and not args.mqtt:
        raise ConfigError("nothing to track: give --mask, --point or --box, or --mqtt to receive prompts")
    if args.stream is not None:
        try:
            check_topic_level(args.stream, "--stream")
        except ValueError as e:
            raise ConfigError(str(e)) from None
    live = LiveSettings(timeout=args.timeout)
    source = open_checked(args.source, args.max_frames, args.stream, live)
    if args.stream is None:
        source.name = re.sub(r"[^A-Za-z0-9_.-]", "_", source.name) or "stream"
    if source.length is not None and args.prompt_frame >= source.length:
        raise ConfigError(f"--prompt-frame {args.prompt_frame} is past the source's {source.length} frames")
    apply_threads(args.threads)
    model = load_model(
        args.config, checkpoint=args.checkpoint, image_size=args.image_size, device=args.device, precision=args.precision
    )
    tracker = Tracker(model, TrackerConfig(compile=args.compile))
    folder = FolderSink(args.out) if args.out else None

    async def main() -> int:
        mqtt = await start_mqtt(mqtt_settings_from_url(args.mqtt, args.topic, args.qos), source.name) if args.mqtt else None
        inference = InferenceQueue(max_batch=1)
        initial: dict[int, list[AddPrompt]] = {args.prompt_frame: list(prompts)} if prompts else {}
        runner = StreamRunner(source, tracker, inference, folder, mqtt, initial, args.max_frames, progress=not args.quiet)
        return _report(await run_runners([runner], inference), [runner])

    return asyncio.run(main())


def cmd_serve(args: argparse.Namespace) -> int:
    from vos.build import load_model
    from vos.tracker import Tracker

    config: EngineConfig = load_engine_config(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sources = [open_checked(s.source, s.max_frames, s.id, config.live) for s in config.streams]
    m = config.model
    apply_threads(m.threads)
    model = load_model(m.config, checkpoint=m.checkpoint, image_size=m.image_size, device=m.device, precision=m.precision)

    async def main() -> int:
        inference = InferenceQueue(max_batch=config.max_batch)
        runners = []
        for spec, source in zip(config.streams, sources):
            mqtt = await start_mqtt(config.mqtt, spec.id) if config.mqtt else None
            folder = FolderSink(spec.out) if spec.out else None
            tracker = Tracker(model, config.tracker)
            runners.append(StreamRunner(source, tracker, inference, folder, mqtt, spec.initial_prompts(), spec.max_frames))
        log.info("serving %d stream(s): %s", len(runners), ", ".join(r.stream for r in runners))
        code = _report(await run_runners(runners, inference), runners)
        sizes = Counter(inference.batches)
        log.info("image-encoder batches: %s", ", ".join(f"{n} of {size}" for size, n in sorted(sizes.items())) or "none")
        return code

    return asyncio.run(main())


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track", help="track objects through a video, folder of frames, RTSP stream or webcam",
        description="Track objects through SOURCE (video file, folder of frames, rtsp:// URL, /dev/videoN, "
        "lavfi:GRAPH); write label-map PNGs and/or publish masks over MQTT. Prompts: --mask/--point/--box "
        "on --prompt-frame, and any time over MQTT ({topic}/{stream}/prompts).",
    )
    p.add_argument("source", help="video file, folder of frames, rtsp:// URL, /dev/videoN or lavfi:GRAPH")
    p.add_argument("--config", help="model config name or YAML (default: the one the checkpoint fits)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint file (default: the cached download)")
    p.add_argument("--image-size", type=int, choices=SUPPORTED_IMAGE_SIZES, help="model input size (512: about 4x less work)")
    p.add_argument("--mask", action="append", default=[], metavar="ID=PNG", help="mask prompt: nonzero pixels (or pixels == ID in a label map)")
    p.add_argument("--point", action="append", default=[], metavar="ID=X,Y[,LABEL]", help="click (label 1 object, 0 background); repeat for more")
    p.add_argument("--box", action="append", default=[], metavar="ID=X0,Y0,X1,Y1", help="box prompt")
    p.add_argument("--prompt-frame", type=int, default=0, metavar="N", help="frame the prompts apply to (default 0)")
    p.add_argument("--out", type=Path, metavar="DIR", help="write DIR/NNNNN.png label maps and DIR/masks.jsonl")
    p.add_argument("--mqtt", metavar="mqtt://HOST:PORT", help="publish masks to this broker, take prompts from it")
    p.add_argument("--topic", default=DEFAULT_TOPIC, metavar="PREFIX", help=f"topic prefix (default {DEFAULT_TOPIC})")
    p.add_argument("--stream", help="stream id in topics (default: the source's name)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=1, help="MQTT QoS of masks and errors (default 1)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--timeout", type=float, default=LiveSettings().timeout, help="live sources: seconds without data before reconnecting")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N (default cpu)")
    add_speed_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_track)

    s = sub.add_parser(
        "serve", help="run the streams of an engine config (prompts over MQTT)",
        description="Long-running service: the streams, model and MQTT settings of CONFIG (YAML); "
        "VOS_... environment variables override it (VOS_MQTT__HOST=..., nested with __).",
    )
    s.add_argument("config", type=Path, help="engine config YAML (see configs/engine.yaml)")
    s.set_defaults(func=cmd_serve)
