"""The streaming engine: source -> tracker -> masks -> sinks, for one stream or several, as a Python API.

    import vos
    from vos.engine import Engine, EngineConfig

    config = EngineConfig(model={"checkpoint": "sam2.1_hiera_tiny.pt", "image_size": 512},
                          streams=[{"source": "clip.mp4", "out": "out/", "prompts": [{"obj_id": 1, "box": [40, 40, 300, 200]}]}])
    async with Engine(config) as engine:
        reports = await engine.run()

`vos track` builds an `EngineConfig` from its flags and `vos serve` reads one from YAML; both are this API.
Per stream three stages overlap: the source decodes in its own thread, the tracker steps in the inference
thread, and the previous frame's masks are encoded (label map, COCO RLE) and written while the next frame is
tracked (`vos.engine.stream`). Streams share one model through an `InferenceQueue`: frames of streams that are
ready together go through the image encoder as one batch.

Prompts (from the settings at a given frame, or over MQTT at any time) are applied between
frames, on the event loop, after checks that leave the tracker unchanged when they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence

from vos.build import load_from_settings
from vos.config import ModelSettings, checked
from vos.device import release_openmp_threads
from vos.engine.heap import HeapTrimmer
from vos.engine.metrics import EngineMetrics, MetricsServer
from vos.engine.settings import EngineConfig, StreamSettings
from vos.engine.stream import StreamReport, StreamRunner
from vos.errors import BrokerUnavailable, ConfigError, MessagesLost, SourceUnavailable, plain_message
from vos.modeling.sam2 import SAM2Model
from vos.streams.sinks import Sink
from vos.streams.sinks.folder import FolderSink
from vos.streams.sinks.mqtt import AvailabilityLink, MqttLink, MqttUnavailable
from vos.streams.sinks.video import OverlayVideoSink
from vos.streams.sources import open_source
from vos.streams.sources.base import FrameSource, SourceError
from vos.tracking.inference_queue import InferenceQueue
from vos.tracking.tracker import Tracker

__all__ = ["Engine", "EngineConfig", "StreamReport", "StreamSettings"]

log = logging.getLogger(__name__)


def _load(settings: ModelSettings) -> SAM2Model:
    """Loads the model in a worker thread and ends that thread's OpenMP team (`release_openmp_threads`)."""
    try:
        return load_from_settings(settings)
    finally:
        release_openmp_threads()


def topic_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "stream"


class Engine:
    """Streams through one model: `async with Engine(config) as engine: reports = await engine.run()`.

    `config`: the model, tracker, MQTT, live-source, viewer and metrics settings and the streams
    (`EngineConfig` or a dict of its fields, the `vos serve` file; `vos track` builds one from its flags). The model of
    `config.model` is loaded once every source and MQTT link is open, so a wrong source or broker
    is reported before the model takes its time; `model`, an already loaded one, is used instead.
    Entering opens the sources (SourceUnavailable), MQTT links (BrokerUnavailable) and output
    folders (ConfigError), and leaving closes them after the streams flushed their last frames.
    `sinks` adds sinks of the caller's (opened and closed by the caller) to streams by id. With
    `wait_for_cameras`, a live source that is down at start does not stop the engine: its stream
    keeps reconnecting. With MQTT, the engine keeps `{prefix}/available` unless `availability` is
    False (a process that supervises several engines keeps it instead: `vos serve --ray`).
    """

    def __init__(
        self,
        config: EngineConfig | dict,
        model: SAM2Model | None = None,
        *,
        sinks: Mapping[str, Sequence[Sink]] | None = None,
        progress: bool = False,
        wait_for_cameras: bool = False,
        availability: bool = True,
    ) -> None:
        if isinstance(config, dict):
            config = checked(EngineConfig, "engine config", **config)
        if not isinstance(config, EngineConfig):
            raise TypeError(
                f"Engine takes an EngineConfig or a dict of its fields, not {type(config).__name__}: "
                "Engine(EngineConfig(...), model)"
            )
        self.config = config
        self.model = model
        self.extra_sinks = dict(sinks or {})
        self.progress = progress
        self.wait_for_cameras = wait_for_cameras
        self.metrics: EngineMetrics | None = None  # while entered; served with `config.metrics`
        self.metrics_server: MetricsServer | None = None
        self.announce_availability = availability
        self.availability: AvailabilityLink | None = None  # {prefix}/available, with `mqtt` and `availability`
        self.viewer = None  # the WebViewer while entered, with `config.web`
        self.runners: list[StreamRunner] = []
        self.inference: InferenceQueue | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Engine:
        async with contextlib.AsyncExitStack() as stack:
            config = self.config
            if config.mqtt is not None and self.announce_availability:
                self.availability = await stack.enter_async_context(self.mqtt_link(AvailabilityLink, config.mqtt))
            opened = [await self._open_stream(stack, spec) for spec in config.streams]
            if config.web is not None:
                from vos.viewer.server import WebViewer

                try:
                    viewer = WebViewer(config.web, config.overlay)
                except ValueError as e:  # a token file that cannot be read
                    raise ConfigError(f"web viewer: {plain_message(e)}") from None
                self.viewer = await stack.enter_async_context(viewer)
                log.info("viewer on %s", self.viewer.address)
            self.metrics = EngineMetrics(lambda: self.runners)
            if config.metrics is not None:
                self.metrics_server = await stack.enter_async_context(MetricsServer(config.metrics, self.metrics))
                log.info("metrics on %smetrics", self.metrics_server.url)
            model = self.model if self.model is not None else await asyncio.to_thread(_load, config.model)
            release_openmp_threads()  # the model may have been loaded in this thread: only the inference thread's team stays
            self.inference = await stack.enter_async_context(InferenceQueue(max_batch=config.max_batch))
            trim_heap = HeapTrimmer(config.heap_trim_interval)  # one for the process's streams
            for spec, (source, sinks, mqtt) in zip(config.streams, opened):
                prompts = spec.initial_prompts()
                self.runners.append(StreamRunner(
                    source, Tracker(model, spec.tracker_config(config.tracker)), self.inference, sinks, mqtt,
                    initial_prompts=prompts, max_frames=spec.max_frames, progress=self.progress,
                ))  # fmt: skip
                self.runners[-1].metrics = self.metrics
                self.runners[-1].trim_heap = trim_heap
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
        links = [r.mqtt for r in self.runners] + [self.availability]
        await asyncio.gather(*(link.close() for link in links if link is not None))  # one flush window for all
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        for runner in self.runners:  # the MQTT counters are final once the links are closed
            runner.report.stats = runner.stats()
            _fail_on_lost_messages(runner)

    async def _open_stream(
        self, stack: contextlib.AsyncExitStack, spec: StreamSettings
    ) -> tuple[FrameSource, list[Sink], MqttLink | None]:
        try:
            source = open_source(spec.source, max_frames=spec.max_frames, name=spec.id, live=self.config.live)
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
        if self.config.mqtt is not None:
            mqtt = await stack.enter_async_context(self.mqtt_link(MqttLink, self.config.mqtt, stream))
            sinks.append(mqtt)
        if spec.out is not None:
            try:
                sinks.append(await stack.enter_async_context(FolderSink(spec.out)))
            except ValueError as e:
                raise ConfigError(f"stream {stream}: {plain_message(e)}") from None
        if spec.render is not None:
            try:
                sinks.append(await stack.enter_async_context(OverlayVideoSink(spec.render, self.config.overlay)))
            except ValueError as e:
                raise ConfigError(f"stream {stream}: {plain_message(e)}") from None
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
            raise ConfigError(plain_message(e)) from None
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


def _fail_on_lost_messages(runner: StreamRunner) -> None:
    """A stream that lost outgoing MQTT messages has failed (MessagesLost), unless it failed otherwise."""
    mqtt = runner.mqtt
    if mqtt is None or not mqtt.stats.dropped or runner.report.error is not None:
        return
    stats, settings = mqtt.stats, mqtt.settings
    how = []
    if stats.dropped > stats.lost:
        how.append(f"{stats.dropped - stats.lost} dropped from the full buffer ({settings.buffer_size} messages)")
    if stats.lost:
        how.append(f"{stats.lost} still undelivered {settings.flush_timeout:g} s after the stream's end")
    runner.report.state = "failed"
    runner.report.error = MessagesLost(
        f"{stats.dropped_text()} while the broker was away: {', '.join(how)}; {runner.report.summary()}"
    )
