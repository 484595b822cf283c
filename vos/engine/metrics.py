"""Prometheus metrics and a health check of a running engine (`--metrics-port`, `metrics:` in the serve YAML).

    GET /metrics   Prometheus text (prometheus-client); every series has the label `stream`
    GET /healthz   200 while every stream is starting, online or reconnecting; 503 otherwise; JSON states

Counters are read from the streams' own counts when scraped, so they equal the run's summary;
the latency histograms are observed once per frame delivered to the sinks:
- decode: seconds the source's thread spent getting the frame (reading + decoding; a camera's wait included),
- model: seconds from handing the frame to the inference queue to its masks (queueing + image encoder + step),
- end to end: seconds from the frame being decoded to every sink having it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from vos.distributed.batch import BatchSummary
    from vos.engine.stream import StreamRunner

HEALTHY_STATES = {"starting", "online", "reconnecting"}
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MetricsSettings(BaseModel):
    """Where /metrics and /healthz are served."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 for a scraper on another machine)")
    port: int = Field(9100, ge=0, le=65535, description="port (0: any free port)")


class EngineMetrics:
    """The metrics of one engine, in a registry of their own (several engines in a process do not collide)."""

    def __init__(self, runners: Callable[[], Iterable[StreamRunner]]) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.runners = runners
        self.registry: CollectorRegistry = CollectorRegistry()
        self.registry.register(_StreamCounters(runners))
        histogram = lambda name, what: Histogram(name, what, ["stream"], registry=self.registry, buckets=LATENCY_BUCKETS)  # noqa: E731
        self.decode = histogram("vos_decode_seconds", "seconds the source spent getting a frame (read + decode)")
        self.model = histogram("vos_model_seconds", "seconds from handing a frame to the model to its masks")
        self.end_to_end = histogram("vos_end_to_end_seconds", "seconds from a frame's decoding to every sink having it")

    def observe(self, stream: str, decode: float, model: float, end_to_end: float) -> None:
        """One frame delivered to the sinks."""
        self.decode.labels(stream).observe(decode)
        self.model.labels(stream).observe(model)
        self.end_to_end.labels(stream).observe(end_to_end)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def health(self) -> tuple[bool, dict[str, str]]:
        states = {s.stream: s.state for s in (r.stats() for r in self.runners())}
        return all(s in HEALTHY_STATES for s in states.values()), states


class _StreamCounters:
    """A collector reading each stream's counters at scrape time."""

    def __init__(self, runners: Callable[[], Iterable[StreamRunner]]) -> None:
        self.runners = runners

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families = {
            "frames": CounterMetricFamily("vos_frames_processed", "frames tracked and delivered", labels=["stream"]),
            "dropped": CounterMetricFamily("vos_frames_dropped", "stale live frames dropped (newest kept)", labels=["stream"]),
            "skipped": CounterMetricFamily("vos_frames_skipped", "frames that could not be decoded", labels=["stream"]),
            "reconnects": CounterMetricFamily("vos_source_reconnects", "source reconnections", labels=["stream"]),
            "refused": CounterMetricFamily("vos_prompts_refused", "prompts refused (any channel)", labels=["stream"]),
            "mqtt_dropped": CounterMetricFamily("vos_mqtt_messages_dropped", "MQTT messages lost: dropped from a full buffer, or undelivered at the end", labels=["stream"]),
            "mqtt_published": CounterMetricFamily("vos_mqtt_messages_published", "MQTT messages the broker took", labels=["stream"]),
            "mqtt_buffered": GaugeMetricFamily("vos_mqtt_messages_buffered", "MQTT messages waiting for the broker", labels=["stream"]),
            "objects": GaugeMetricFamily("vos_objects_tracked", "objects in the last frame's masks", labels=["stream"]),
            "fps": GaugeMetricFamily("vos_frames_per_second", "frames/s over the recent frames", labels=["stream"]),
            "up": GaugeMetricFamily("vos_stream_up", "1 while the stream is starting, online or reconnecting", labels=["stream"]),
            "detections": CounterMetricFamily("vos_detections", "the detector's detections, tracked objects included", labels=["stream"]),
            "detected": CounterMetricFamily("vos_objects_detected", "objects the detector added", labels=["stream"]),
            "retired": CounterMetricFamily("vos_objects_retired", "objects the detector added, removed once absent", labels=["stream"]),
        }  # fmt: skip
        for runner in self.runners():
            s = runner.stats()
            values = {
                "frames": s.frames, "dropped": s.dropped_frames, "skipped": s.skipped_frames,
                "reconnects": s.source_reconnects, "refused": s.refused_prompts, "objects": s.objects, "fps": s.fps,
                "up": int(s.healthy), "detections": s.detections, "detected": s.detected_objects,
                "retired": s.retired_objects,
            }  # fmt: skip
            if runner.mqtt is not None:
                values.update(mqtt_dropped=s.dropped_messages, mqtt_published=s.published, mqtt_buffered=s.buffered_messages)
            for key, value in values.items():
                families[key].add_metric([s.stream], value)
        yield from families.values()


class BatchMetrics:
    """The metrics of a `vos batch` run, read from its summary at scrape time (videos are the units of work,
    so frames move when a video completes); healthy while the batch runs."""

    def __init__(self, summary: BatchSummary) -> None:
        from prometheus_client import CollectorRegistry

        self.summary = summary
        self.registry: CollectorRegistry = CollectorRegistry()
        self.registry.register(self)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.summary
        videos = CounterMetricFamily("vos_batch_videos", "videos finished, by outcome", labels=["state"])
        for state, n in (("done", len(s.done)), ("skipped", len(s.skipped)), ("failed", len(s.failed))):
            videos.add_metric([state], n)
        yield videos
        yield GaugeMetricFamily("vos_batch_videos_running", "videos a worker is tracking now", value=s.running)
        yield CounterMetricFamily("vos_batch_retries", "video attempts that failed and were queued again", value=s.retried)
        yield CounterMetricFamily("vos_batch_frames_processed", "frames of the videos done", value=s.frames)
        yield GaugeMetricFamily("vos_batch_frames_per_second", "frames of the videos done / seconds since the start", value=s.fps)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def health(self) -> tuple[bool, dict[str, str]]:
        return True, {"batch": "running"}


class MetricsSource(Protocol):
    """What a `MetricsServer` serves: Prometheus text, and (healthy, state per stream); either may be awaitable."""

    def text(self) -> bytes | Awaitable[bytes]: ...

    def health(self) -> tuple[bool, dict[str, str]] | Awaitable[tuple[bool, dict[str, str]]]: ...


async def _result(value):
    return await value if inspect.isawaitable(value) else value


class MetricsServer:
    """`async with MetricsServer(settings, metrics)` serves /metrics and /healthz (aiohttp); ConfigError if the port is taken."""

    def __init__(self, settings: MetricsSettings, metrics: MetricsSource) -> None:
        self.settings = settings
        self.metrics = metrics
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}/"

    async def __aenter__(self) -> MetricsServer:
        from aiohttp import web

        from vos.http_service import start_app

        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/healthz", self._health)])
        self._runner, self.port = await start_app(app, self.settings.host, self.settings.port, "metrics")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(body=await _result(self.metrics.text()), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        healthy, states = await _result(self.metrics.health())
        return web.Response(text=json.dumps({"healthy": healthy, "streams": states}), status=200 if healthy else 503,
                            content_type="application/json")  # fmt: skip


@contextlib.contextmanager
def serve_in_thread(settings: MetricsSettings, metrics: MetricsSource) -> Iterator[MetricsServer]:
    """A `MetricsServer` on an event loop of its own thread, for a caller without one (`vos batch`)."""
    started: concurrent.futures.Future[MetricsServer] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with MetricsServer(settings, metrics) as server:
                started.set_result(server)
                await stop.wait()
        except BaseException as e:
            if not started.done():
                started.set_exception(e)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="vos-metrics", daemon=True)
    thread.start()
    try:
        yield started.result()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        loop.close()
