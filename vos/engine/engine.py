"""The streaming engine: source -> tracker -> masks -> sinks, for one stream or several, as a Python API.

    import vos
    from vos.engine.engine import Engine, StreamSettings

    stream = StreamSettings(source="clip.mp4", out="out/", prompts=[{"obj_id": 1, "box": [40, 40, 300, 200]}])
    async with Engine(vos.load_model("sam2.1_hiera_t", image_size=512), [stream]) as engine:
        reports = await engine.run()

`vos track` and `vos serve` are this API with settings from flags or YAML. Per stream three
stages overlap: the source decodes in its own thread, the tracker steps in the inference
thread, and the previous frame's masks are encoded (label map, COCO RLE) and written while
the next frame is tracked. Streams share one model through an `InferenceQueue`: frames of
streams that are ready together go through the image encoder as one batch.

Prompts (from the settings at a given frame, or over MQTT at any time) are applied between
frames, on the event loop, after checks that leave the tracker unchanged when they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vos.build import load_from_settings
from vos.config import TrackerConfig
from vos.device import release_openmp_threads
from vos.engine.metrics import EngineMetrics, MetricsServer, MetricsSettings
from vos.engine.settings import EngineConfig, ModelSettings, StreamSettings
from vos.errors import BrokerUnavailable, ConfigError, SourceUnavailable
from vos.modeling.sam2 import SAM2Model
from vos.streams.label_map import merge_masks
from vos.streams.messages import (
    AddPrompt,
    MaskMessage,
    ObjectMask,
    RemoveObject,
    Reset,
    StatusMessage,
)
from vos.streams.prompt_inbox import PromptInbox
from vos.streams.redact import redact
from vos.streams.sinks import Sink
from vos.streams.sinks.folder import FolderSink
from vos.streams.sinks.mqtt import (
    AvailabilityLink,
    MqttLink,
    MqttSettings,
    MqttUnavailable,
)
from vos.streams.sinks.video import OverlayVideoSink
from vos.streams.sources import LiveSettings, open_source
from vos.streams.sources.base import Frame, FrameSource, SourceError
from vos.tracking.inference_queue import InferenceQueue
from vos.tracking.tracker import Tracker, TrackResult
from vos.viewer import WebSettings

__all__ = ["Engine", "EngineConfig", "ModelSettings", "StreamReport", "StreamSettings"]

log = logging.getLogger(__name__)

LATENCY_WINDOW = 1000  # recent frames whose latency a report keeps
RATE_WINDOW = 20  # recent frames the live frames/s is measured over
STATUS_INTERVAL = 5.0  # seconds: a running stream republishes its status (fresh counters) at least this often
SOURCE_STATUS = {"connected": "online", "disconnected": "reconnecting", "reconnecting": "reconnecting"}
"""Stream status published for each connection event of a live source."""


@dataclass
class StreamReport:
    """What a stream did; bounded (counters and a rolling latency window), so it can live as long as the stream."""

    stream: str
    state: str = "running"  # then "ended" (source or max_frames), "stopped" (`Engine.stop`) or "failed"
    error: BaseException | None = None  # why it failed
    frames: int = 0
    dropped_frames: int = 0
    skipped_frames: int = 0
    source_reconnects: int = 0
    refused_prompts: int = 0
    published: int = 0
    lost_messages: int = 0
    seconds: float = 0.0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))  # decode -> sinks, s

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        parts = [f"{self.stream}: {self.frames} frames in {self.seconds:.1f} s ({self.fps:.2f} frames/s)"]
        if self.dropped_frames:
            parts.append(f"{self.dropped_frames} stale live frames dropped")
        if self.skipped_frames:
            parts.append(f"{self.skipped_frames} unreadable frames skipped")
        if self.source_reconnects:
            parts.append(f"{self.source_reconnects} source reconnects")
        if self.refused_prompts:
            parts.append(f"{self.refused_prompts} prompts refused")
        if self.published or self.lost_messages:
            parts.append(f"{self.published} MQTT messages published, {self.lost_messages} lost")
        return ", ".join(parts)


class StreamRunner:
    """One stream through the engine; it uses the source, sinks and MQTT link it is given and closes none of them.

    `initial_prompts` maps a source frame index to the prompts applied on that frame. Prompts
    from MQTT apply to the next frame processed.
    """

    def __init__(
        self,
        source: FrameSource,
        tracker: Tracker,
        inference: InferenceQueue,
        sinks: Sequence[Sink] = (),
        mqtt: MqttLink | None = None,
        initial_prompts: Mapping[int, Sequence[AddPrompt]] | None = None,
        max_frames: int | None = None,
        progress: bool = False,
    ) -> None:
        self.source = source
        self.stream = mqtt.stream if mqtt is not None else source.name
        self.tracker = tracker
        self.inference = inference
        self.sinks = list(sinks)
        self.mqtt = mqtt
        self.inbox = mqtt.inbox if mqtt is not None else PromptInbox(self.stream)  # prompts from MQTT and the viewer
        self.state = "starting"  # the status last published
        self.detail = ""  # and its detail
        self.objects = 0  # objects in the last delivered frame's masks
        self.metrics: EngineMetrics | None = None
        self._delivered: deque[float] = deque(maxlen=RATE_WINDOW)  # when recent frames reached the sinks
        self.initial_prompts = {frame: list(prompts) for frame, prompts in (initial_prompts or {}).items()}
        self.max_frames = max_frames
        self.progress = progress
        self.report = StreamReport(self.stream)
        self._status_at = 0.0  # when the status was last published
        if mqtt is not None:
            mqtt.status_now = self._status_now

    async def _apply_prompts(self, frame: Frame) -> None:
        """Initial prompts that do not fit the frame stop the stream (ConfigError); others are refused.

        Masks are decoded in a thread, and only once their declared size is the frame's.
        """
        hw = frame.image.shape[:2]
        for message in self.initial_prompts.pop(frame.index, []):
            try:
                self.tracker.set_prompt(message.obj_id, await asyncio.to_thread(message.to_prompt, hw))
            except ValueError as e:
                raise ConfigError(f"prompt for object {message.obj_id} on frame {frame.index}: {e}") from None
        for message in self.inbox.take():
            try:
                if isinstance(message, Reset):
                    self.tracker.reset()
                elif isinstance(message, RemoveObject):
                    if message.obj_id not in self.tracker.object_ids:
                        raise ValueError(f"unknown object id {message.obj_id}")
                    self.tracker.remove_object(message.obj_id)
                else:
                    self.tracker.set_prompt(message.obj_id, await asyncio.to_thread(message.to_prompt, hw))
            except ValueError as e:
                where = f"object {message.obj_id}: " if isinstance(message, AddPrompt) else ""
                self.inbox.refuse(f"{where}{e}", message.model_dump_json())

    def _status_message(self, state: str, detail: str) -> StatusMessage:
        """The stream's status with its counters as they are now."""
        stats = self.source.stats
        return StatusMessage(
            stream=self.stream, state=state, detail=redact(detail), frames=self.report.frames,
            dropped_frames=stats.dropped, skipped_frames=stats.skipped, source_reconnects=stats.reconnects,
            dropped_messages=self.mqtt.stats.dropped if self.mqtt is not None else 0,
        )  # fmt: skip

    def _status_now(self) -> StatusMessage:
        """Announced on each MQTT (re)connect: the last state published, with the counters as they are now (the last
        published ones may be `STATUS_INTERVAL` old); "online" before the first."""
        return self._status_message({"starting": "online"}.get(self.state, self.state), self.detail)

    def _status(self, state: str, detail: str = "") -> None:
        self._status_at = time.monotonic()
        self.state, self.detail = state, detail
        if self.mqtt is not None:
            self.mqtt.publish_status(self._status_message(state, detail))

    def _encode(self, frame: Frame, result: TrackResult) -> tuple[MaskMessage, np.ndarray]:
        """Blocking: the frame's label map and its message (each object's mask is its label-map pixels)."""
        h, w = frame.image.shape[:2]
        labels = merge_masks(result.masks, result.logits, (h, w))
        objects = [ObjectMask.from_mask(i, labels == i, result.scores[i]) for i in sorted(result.masks)]
        message = MaskMessage(stream=self.stream, frame_index=frame.index, pts=frame.pts, width=w, height=h, objects=objects)
        return message, labels

    @property
    def recent_fps(self) -> float:
        """Frames/s over the last `RATE_WINDOW` frames delivered (0 before two)."""
        times = self._delivered
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    async def _write(self, results: asyncio.Queue) -> None:
        while (item := await results.get()) is not None:
            frame, result, model_seconds = item
            message, labels = await asyncio.to_thread(self._encode, frame, result)
            for sink in self.sinks:
                await sink.write(frame, message, labels)
            now = time.monotonic()
            self.report.latencies.append(now - frame.decoded_at)
            self._delivered.append(now)
            self.objects = len(message.objects)
            if self.metrics is not None:
                self.metrics.observe(self.stream, frame.decode_seconds, model_seconds, now - frame.decoded_at)
            if time.monotonic() - self._status_at >= STATUS_INTERVAL:
                self._status("online")

    def _on_source_status(self, state: str, detail: str) -> None:
        """The source's connection events as the stream's status (its end is published by `run`)."""
        log.info("stream %s: source %s %s", self.stream, state, detail)
        if state in SOURCE_STATUS:
            self._status(SOURCE_STATUS[state], f"source {state}: {detail}".strip())

    async def run(self) -> StreamReport:
        """Processes the stream until the source ends, `max_frames`, or cancellation.

        Every frame tracked reaches the sinks, also when the source fails or the run is cancelled.
        """
        from tqdm import tqdm

        loop = asyncio.get_running_loop()
        total = self.source.length
        if self.max_frames is not None:
            total = self.max_frames if total is None else min(total, self.max_frames)
        bar = tqdm(total=total, desc=self.stream, unit="frame", disable=not self.progress, dynamic_ncols=True)
        results: asyncio.Queue = asyncio.Queue(maxsize=2)
        writer = asyncio.create_task(self._write(results), name=f"write-{self.stream}")
        self._status("online")
        start = time.monotonic()
        detail = ""
        on_status = lambda state, detail: loop.call_soon_threadsafe(self._on_source_status, state, detail)  # noqa: E731
        try:
            async with contextlib.aclosing(self.source.frames(on_status)) as frames:  # stops the decoder on break
                async for frame in frames:
                    if writer.done():
                        writer.result()
                    await self._apply_prompts(frame)
                    handed = time.monotonic()
                    result = await self.inference.step(self.tracker, frame.image)
                    await results.put((frame, result, time.monotonic() - handed))
                    self.report.frames += 1
                    bar.update()
                    if self.max_frames is not None and self.report.frames >= self.max_frames:
                        break
            await results.put(None)
            await writer
            self.report.state = "ended"
        except asyncio.CancelledError:
            self.report.state, detail = "stopped", "stopped on request"
            await self._drain(writer, results)
            raise
        except BaseException as e:
            self.report.state, self.report.error, detail = "failed", e, f"{type(e).__name__}: {e}"
            await self._drain(writer, results)
            raise
        finally:
            bar.close()
            self.report.seconds = time.monotonic() - start
            self.report.dropped_frames = self.source.stats.dropped
            self.report.skipped_frames = self.source.stats.skipped
            self.report.source_reconnects = self.source.stats.reconnects
            self.report.refused_prompts = self.inbox.refused
            self._status({"failed": "offline"}.get(self.report.state, self.report.state), detail)
        return self.report

    @staticmethod
    async def _drain(writer: asyncio.Task, results: asyncio.Queue) -> None:
        """After a failure: the frames already tracked still reach the sinks (unless writing is what failed)."""
        if not writer.done():
            await results.put(None)
        await asyncio.gather(writer, return_exceptions=True)


def _load(settings: ModelSettings) -> SAM2Model:
    """Loads the model in a worker thread and ends that thread's OpenMP team (`release_openmp_threads`)."""
    try:
        return load_from_settings(settings)
    finally:
        release_openmp_threads()


def topic_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "stream"


class Engine:
    """Streams through one model: `async with Engine(model, streams) as engine: reports = await engine.run()`.

    `model`: a loaded model, or `ModelSettings` to load once every source and MQTT link is open, so
    a wrong source or broker is reported before the model takes its time. Entering opens the
    sources (SourceUnavailable), MQTT links (BrokerUnavailable) and output folders (ConfigError)
    and leaving closes them, after the streams flushed their last frames. `sinks` adds sinks of
    the caller's (opened and closed by the caller) to streams by id. With `wait_for_cameras`, a
    live source that is down at start does not stop the engine: its stream keeps reconnecting.
    With MQTT, the engine keeps `{prefix}/available` unless `availability` is False (a process that
    supervises several engines keeps it instead: `vos serve --ray`).
    """

    def __init__(
        self,
        model: SAM2Model | ModelSettings,
        streams: Sequence[StreamSettings],
        *,
        tracker: TrackerConfig | None = None,
        mqtt: MqttSettings | None = None,
        live: LiveSettings | None = None,
        max_batch: int = EngineConfig.model_fields["max_batch"].default,
        sinks: Mapping[str, Sequence[Sink]] | None = None,
        progress: bool = False,
        wait_for_cameras: bool = False,
        web: WebSettings | None = None,
        metrics: MetricsSettings | None = None,
        availability: bool = True,
    ) -> None:
        if not streams:
            raise ConfigError("an engine needs at least one stream")
        self.model = model
        self.streams = list(streams)
        self.tracker_config = tracker or TrackerConfig()
        self.mqtt_settings = mqtt
        self.live = live or LiveSettings()
        self.max_batch = max_batch
        self.extra_sinks = dict(sinks or {})
        self.progress = progress
        self.wait_for_cameras = wait_for_cameras
        self.web = web
        self.metrics_settings = metrics
        self.metrics: EngineMetrics | None = None  # while entered; served with `metrics`
        self.metrics_server: MetricsServer | None = None
        self.announce_availability = availability
        self.availability: AvailabilityLink | None = None  # {prefix}/available, with `mqtt` and `availability`
        self.viewer = None  # the WebViewer while entered, with `web`
        self.runners: list[StreamRunner] = []
        self.inference: InferenceQueue | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def from_config(cls, config: EngineConfig, **options: object) -> Engine:
        """The engine of a `vos serve` config (the model is loaded on entering)."""
        return cls(
            config.model, config.streams, tracker=config.tracker, mqtt=config.mqtt, live=config.live,
            max_batch=config.max_batch, web=config.web, metrics=config.metrics, **options,
        )  # fmt: skip

    async def __aenter__(self) -> Engine:
        async with contextlib.AsyncExitStack() as stack:
            if self.mqtt_settings is not None and self.announce_availability:
                self.availability = await stack.enter_async_context(self.mqtt_link(AvailabilityLink, self.mqtt_settings))
            opened = [await self._open_stream(stack, spec) for spec in self.streams]
            if self.web is not None:
                from vos.viewer.server import WebViewer

                try:
                    viewer = WebViewer(self.web)
                except ValueError as e:  # a token file that cannot be read
                    raise ConfigError(f"web viewer: {e}") from None
                self.viewer = await stack.enter_async_context(viewer)
                log.info("viewer on %s", self.viewer.url)
            self.metrics = EngineMetrics(lambda: self.runners)
            if self.metrics_settings is not None:
                self.metrics_server = await stack.enter_async_context(MetricsServer(self.metrics_settings, self.metrics))
                log.info("metrics on %smetrics", self.metrics_server.url)
            model = self.model if isinstance(self.model, SAM2Model) else await asyncio.to_thread(_load, self.model)
            release_openmp_threads()  # the model may have been loaded in this thread: only the inference thread's team stays
            self.inference = await stack.enter_async_context(InferenceQueue(max_batch=self.max_batch))
            for spec, (source, sinks, mqtt) in zip(self.streams, opened):
                prompts = spec.initial_prompts()
                self.runners.append(StreamRunner(
                    source, Tracker(model, self.tracker_config), self.inference, sinks, mqtt,
                    initial_prompts=prompts, max_frames=spec.max_frames, progress=self.progress,
                ))  # fmt: skip
                self.runners[-1].metrics = self.metrics
                if self.viewer is not None:
                    self.runners[-1].sinks.append(self.viewer.add_stream(self.runners[-1]))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        self.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.availability is not None:  # a clean disconnect sends no last will: say it
            clean = exc_type is None or issubclass(exc_type, (asyncio.CancelledError, KeyboardInterrupt))
            self.availability.set_state("stopped" if clean else "offline")
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        for runner in self.runners:
            runner.report.refused_prompts = runner.inbox.refused
            if runner.mqtt is not None:
                runner.report.published = runner.mqtt.stats.published
                runner.report.lost_messages = runner.mqtt.stats.lost

    async def _open_stream(
        self, stack: contextlib.AsyncExitStack, spec: StreamSettings
    ) -> tuple[FrameSource, list[Sink], MqttLink | None]:
        try:
            source = open_source(spec.source, max_frames=spec.max_frames, name=spec.id, live=self.live)
        except SourceError as e:
            raise SourceUnavailable(str(e)) from None
        try:
            await stack.enter_async_context(source)
        except SourceError as e:
            if not (self.wait_for_cameras and source.live):
                raise SourceUnavailable(str(e)) from None
            log.warning("stream %s: %s; retrying in the background", spec.id or source.name, e)
        stream = spec.id or topic_safe(source.name)
        frames = [p.frame for p in spec.prompts]
        if source.length is not None and frames and max(frames) >= source.length:
            raise ConfigError(f"stream {stream}: prompt frame {max(frames)} is past the source's {source.length} frames")
        sinks: list[Sink] = []
        mqtt = None
        if self.mqtt_settings is not None:
            mqtt = await stack.enter_async_context(self.mqtt_link(MqttLink, self.mqtt_settings, stream))
            sinks.append(mqtt)
        if spec.out is not None:
            try:
                sinks.append(await stack.enter_async_context(FolderSink(spec.out)))
            except ValueError as e:
                raise ConfigError(f"stream {stream}: {e}") from None
        if spec.render is not None:
            try:
                sinks.append(await stack.enter_async_context(OverlayVideoSink(spec.render)))
            except ValueError as e:
                raise ConfigError(f"stream {stream}: {e}") from None
        sinks.extend(self.extra_sinks.get(stream, ()))
        source.name = stream
        return source, sinks, mqtt

    @staticmethod
    @contextlib.asynccontextmanager
    async def mqtt_link(kind: type[MqttLink], *args: object):
        """An open MQTT link of `kind`; BrokerUnavailable / ConfigError (unreadable password file, certificate)."""
        try:
            link = kind(*args)
            await link.start()
        except MqttUnavailable as e:
            raise BrokerUnavailable(str(e)) from None
        except ValueError as e:
            raise ConfigError(str(e)) from None
        try:
            yield link
        finally:
            await link.close()

    async def run(self) -> list[StreamReport]:
        """Runs every stream to its end (or `stop()`); one report per stream, failures in `report.error`."""
        if not self.runners:
            raise RuntimeError("enter the engine first: async with Engine(...) as engine")
        self._tasks = [asyncio.create_task(r.run(), name=f"stream-{r.stream}") for r in self.runners]
        log.info("running %d stream(s): %s", len(self.runners), ", ".join(r.stream for r in self.runners))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if len(self.runners) > 1:
            sizes = sorted(self.inference.batch_sizes.items())
            log.info("image-encoder batches: %s", ", ".join(f"{n} of {size}" for size, n in sizes) or "none")
        return [r.report for r in self.runners]

    def stop(self) -> None:
        """Asks every stream to stop after flushing its frames (safe from a signal handler on the loop)."""
        for task in self._tasks:
            task.cancel()
