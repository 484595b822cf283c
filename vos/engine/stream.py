"""One stream through the engine (`StreamRunner`) and its counters: `StreamStats`, the one snapshot that status
messages, metrics, the viewer and the final `StreamReport` read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vos.engine.metrics import HEALTHY_STATES, EngineMetrics
from vos.errors import ConfigError
from vos.streams.label_map import merge_masks
from vos.streams.messages import AddPrompt, MaskMessage, ObjectMask, RemoveObject, Reset, StatusMessage
from vos.streams.prompt_inbox import PromptInbox, Received
from vos.streams.redact import redact
from vos.streams.sinks import Sink
from vos.streams.sinks.mqtt import MqttLink
from vos.streams.sources.base import Frame, FrameSource
from vos.tracking.inference_queue import InferenceQueue
from vos.tracking.tracker import Tracker, TrackResult

log = logging.getLogger(__name__)

LATENCY_WINDOW = 1000  # recent frames whose latency a report keeps
RATE_WINDOW = 20  # recent frames the live frames/s is measured over
STATUS_INTERVAL = 5.0  # seconds: a running stream republishes its status (fresh counters) at least this often
SOURCE_STATUS = {"connected": "online", "disconnected": "reconnecting", "reconnecting": "reconnecting"}
"""Stream status published for each connection event of a live source."""


@dataclass(frozen=True)
class StreamStats:
    """A stream's counters at one moment: the one record that status messages, metrics, the viewer and the final
    report read (`StreamRunner.stats()`)."""

    stream: str
    state: str = "starting"  # the status last published: starting, online, reconnecting, ended, stopped, offline
    detail: str = ""  # and its detail
    frames: int = 0  # tracked and handed to the sinks
    dropped_frames: int = 0  # stale live frames (the newest kept)
    skipped_frames: int = 0  # undecodable frames
    source_reconnects: int = 0
    pending_prompts: int = 0  # waiting for the next frame
    refused_prompts: int = 0  # any channel: MQTT, the viewer, the config
    objects: int = 0  # in the last delivered frame's masks
    discovered_objects: int = 0  # added by auto-discovery (`TrackerConfig.discover`)
    discovery_seconds: float = 0.0  # spent looking for them
    detections: int = 0  # the detector's detections (`TrackerConfig.detector`), tracked or not
    detected_objects: int = 0  # objects the detector added
    retired_objects: int = 0  # objects the detector added, removed once absent
    detector_seconds: float = 0.0  # spent detecting
    fps: float = 0.0  # over the last `RATE_WINDOW` frames delivered (0 before two)
    published: int = 0  # MQTT messages the broker took
    dropped_messages: int = 0  # MQTT messages lost to a full buffer (or still buffered at the end: `lost_messages`)
    lost_messages: int = 0
    buffered_messages: int = 0  # MQTT messages waiting for the broker

    @property
    def healthy(self) -> bool:
        return self.state in HEALTHY_STATES

    def status_message(self, state: str | None = None) -> StatusMessage:
        """The stream's status message (`state` instead of the stats' own, e.g. the one about to be published)."""
        return StatusMessage(
            stream=self.stream, state=state or self.state, detail=redact(self.detail), frames=self.frames,
            dropped_frames=self.dropped_frames, skipped_frames=self.skipped_frames,
            source_reconnects=self.source_reconnects, dropped_messages=self.dropped_messages,
            discovered_objects=self.discovered_objects,
        )  # fmt: skip


@dataclass
class StreamReport:
    """What a stream did: its outcome, its last counters and a rolling latency window (bounded, so it can live as
    long as the stream)."""

    stream: str
    state: str = "running"  # then "ended" (source or max_frames), "stopped" (`Engine.stop`) or "failed"
    error: BaseException | None = None  # why it failed
    seconds: float = 0.0
    stats: StreamStats | None = None  # the counters when the stream ended (None: it never ran)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))  # decode -> sinks, s

    def __post_init__(self) -> None:
        if self.stats is None:
            self.stats = StreamStats(self.stream)

    @property
    def frames(self) -> int:
        return self.stats.frames

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        s = self.stats
        parts = [f"{self.stream}: {s.frames} frames in {self.seconds:.1f} s ({self.fps:.2f} frames/s)"]
        if s.dropped_frames:
            parts.append(f"{s.dropped_frames} stale live frames dropped")
        if s.skipped_frames:
            parts.append(f"{s.skipped_frames} unreadable frames skipped")
        if s.source_reconnects:
            parts.append(f"{s.source_reconnects} source reconnects")
        if s.refused_prompts:
            parts.append(f"{s.refused_prompts} prompts refused")
        if s.discovered_objects or s.discovery_seconds:
            parts.append(f"{s.discovered_objects} objects discovered ({s.discovery_seconds:.1f} s looking)")
        if s.detections or s.detector_seconds:
            parts.append(
                f"{s.detected_objects} objects detected ({s.detections} detections, {s.detector_seconds:.1f} s "
                f"detecting), {s.retired_objects} retired"
            )
        if s.published or s.dropped_messages:
            parts.append(f"{s.published} MQTT messages published, {s.dropped_messages} lost")
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
        self.frames = 0  # tracked and handed to the writer
        self.objects = 0  # objects in the last delivered frame's masks
        self.metrics: EngineMetrics | None = None
        self.trim_heap: Callable[[], object] | None = None  # called after each frame delivered (`vos.engine.heap`)
        self._delivered: deque[float] = deque(maxlen=RATE_WINDOW)  # when recent frames reached the sinks
        self.initial_prompts = {frame: list(prompts) for frame, prompts in (initial_prompts or {}).items()}
        self.max_frames = max_frames
        self.progress = progress
        self.report = StreamReport(self.stream)
        self._applied: dict[int, Received] = {}  # this frame's inbox prompts by object: a step may still refuse them
        self._status_at = 0.0  # when the status was last published
        if mqtt is not None:
            mqtt.status_now = self._status_now

    async def _apply_prompts(self, frame: Frame) -> None:
        """Initial prompts that do not fit the frame stop the stream (ConfigError); others are refused.

        Masks are decoded in a thread, and only once their declared size is the frame's.
        """
        hw = frame.image.shape[:2]
        self.inbox.frame_size = hw
        for message in self.initial_prompts.pop(frame.index, []):
            try:
                self.tracker.set_prompt(message.obj_id, await asyncio.to_thread(message.to_prompt, hw))
            except ValueError as e:
                raise ConfigError(f"prompt for object {message.obj_id} on frame {frame.index}: {e}") from None
        self._applied = {}
        for received in self.inbox.take_received():
            message = received.prompt
            try:
                if isinstance(message, Reset):
                    self.tracker.reset()
                elif isinstance(message, RemoveObject):
                    if message.obj_id not in self.tracker.object_ids:
                        raise ValueError(f"unknown object id {message.obj_id}")
                    self.tracker.remove_object(message.obj_id)
                else:
                    self.tracker.set_prompt(message.obj_id, await asyncio.to_thread(message.to_prompt, hw))
                    self._applied[message.obj_id] = received
            except ValueError as e:
                where = f"object {message.obj_id}: " if isinstance(message, AddPrompt) else ""
                self.inbox.refuse(f"{where}{e}", received=received)

    def stats(self) -> StreamStats:
        """The stream's counters as they are now."""
        source, mqtt, discoverer = self.source.stats, self.mqtt, getattr(self.tracker, "discoverer", None)
        detection = getattr(self.tracker, "detection", None)
        return StreamStats(
            stream=self.stream, state=self.state, detail=self.detail, frames=self.frames,
            dropped_frames=source.dropped, skipped_frames=source.skipped, source_reconnects=source.reconnects,
            pending_prompts=len(self.inbox), refused_prompts=self.inbox.refused, objects=self.objects,
            fps=self.recent_fps, published=mqtt.stats.published if mqtt else 0,
            dropped_messages=mqtt.stats.dropped if mqtt else 0, lost_messages=mqtt.stats.lost if mqtt else 0,
            buffered_messages=mqtt.pending if mqtt else 0, discovered_objects=discoverer.found if discoverer else 0,
            discovery_seconds=discoverer.seconds if discoverer else 0.0,
            detections=detection.detections if detection else 0, detected_objects=detection.found if detection else 0,
            retired_objects=detection.retired if detection else 0,
            detector_seconds=detection.seconds if detection else 0.0,
        )  # fmt: skip

    def _status_now(self) -> StatusMessage:
        """Announced on each MQTT (re)connect: the last state published, with the counters as they are now (the last
        published ones may be `STATUS_INTERVAL` old); "online" before the first."""
        return self.stats().status_message({"starting": "online"}.get(self.state, self.state))

    def _status(self, state: str, detail: str = "") -> None:
        self._status_at = time.monotonic()
        self.state, self.detail = state, detail
        if self.mqtt is not None:
            self.mqtt.publish_status(self.stats().status_message())

    def _encode(self, frame: Frame, result: TrackResult) -> tuple[MaskMessage, np.ndarray]:
        """Blocking: the frame's label map and its message (each object's mask is its label-map pixels)."""
        h, w = frame.image.shape[:2]
        labels = merge_masks(result.masks, result.logits, (h, w))
        objects = [
            ObjectMask.from_mask(i, labels == i, result.scores[i], result.classes.get(i), result.class_scores.get(i))
            for i in sorted(result.masks)
        ]
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
            if self.trim_heap is not None:
                self.trim_heap()

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
                    for obj_id, reason in result.refused.items():  # prompts that did not fit this frame
                        self.inbox.refuse(reason, received=self._applied.get(obj_id))
                    await results.put((frame, result, time.monotonic() - handed))
                    self.frames += 1
                    bar.update()
                    if self.max_frames is not None and self.frames >= self.max_frames:
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
            self._status({"failed": "offline"}.get(self.report.state, self.report.state), detail)
            self.report.stats = self.stats()
        return self.report

    @staticmethod
    async def _drain(writer: asyncio.Task, results: asyncio.Queue) -> None:
        """After a failure: the frames already tracked still reach the sinks (unless writing is what failed)."""
        if not writer.done():
            await results.put(None)
        await asyncio.gather(writer, return_exceptions=True)
