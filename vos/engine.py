"""The streaming engine: source -> tracker -> masks -> sinks, for one stream or several.

Per stream three stages overlap: the source decodes in its own thread, the tracker
steps in the inference thread, and the previous frame's masks are encoded (label map,
COCO RLE) and written in a third while the next frame is tracked. Several streams share
one model through an `InferenceQueue`: frames of streams that are ready together go
through the image encoder as one batch.

Prompts (from the CLI at a given frame, or from MQTT at any time) are applied between
frames, on the event loop, after checks that leave the tracker unchanged when they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from vos.errors import ConfigError
from vos.streams.folder_sink import FolderSink
from vos.streams.label_map import merge_masks
from vos.streams.messages import AddPrompt, MaskMessage, ObjectMask, RemoveObject, Reset, StatusMessage
from vos.streams.mqtt import MqttLink
from vos.streams.source import Frame, FrameSource
from vos.tracker import Tracker, TrackResult

log = logging.getLogger(__name__)

PromptMessage = AddPrompt | RemoveObject | Reset
SOURCE_STATUS = {"connected": "online", "disconnected": "reconnecting", "reconnecting": "reconnecting"}
"""Stream status published for each connection event of a live source."""


class InferenceQueue:
    """Runs tracker steps in one worker thread, batching the image encoder over the frames waiting together.

    Every tracker must use the same model. At most `max_batch` frames share a batch. The thread is
    the queue's own (not asyncio's shared pool): torch's OpenMP team belongs to the thread that calls
    it, so model work hopping between pool threads would leave several teams competing for the cores.
    """

    def __init__(self, max_batch: int = 4) -> None:
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._waiting: list[tuple[Tracker, np.ndarray, asyncio.Future]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.batches: list[int] = []  # sizes of the image-encoder batches run, for reports
        self.seconds: list[float] = []  # model time of each batch (image encoder + every tracker step)

    async def step(self, tracker: Tracker, image: np.ndarray) -> TrackResult:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="inference")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((tracker, image, future))
        self._ready.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            await asyncio.sleep(0)  # let streams whose frames are ready now join the batch
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            if not self._waiting:
                self._ready.clear()
            live = [b for b in batch if not b[2].done()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                batch_in = [(t, img) for t, img, _ in live]
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self._step_batch, batch_in)
            except Exception as e:  # every frame of a failed batch gets the error
                results = [e] * len(live)
            self.seconds.append(time.perf_counter() - started)
            for (_, _, future), result in zip(live, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    @torch.inference_mode()
    def _step_batch(self, batch: list[tuple[Tracker, np.ndarray]]) -> list[TrackResult | Exception]:
        active = [i for i, (t, _) in enumerate(batch) if not t.idle]
        features: dict[int, object] = {}
        if active:
            encoded = batch[active[0]][0].segmenter.encode_images([batch[i][1] for i in active])
            features = dict(zip(active, encoded))
            self.batches.append(len(active))
        results: list[TrackResult | Exception] = []
        for i, (tracker, image) in enumerate(batch):
            try:
                results.append(tracker.step(image, features=features.get(i)))  # type: ignore[arg-type]
            except Exception as e:
                results.append(e)
        return results

    async def close(self) -> None:
        """Stops batching and ends the worker thread once the step in flight, if any, is done."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._executor.shutdown, wait=True)


@dataclass
class StreamReport:
    """What a stream did, for the CLI's summary and the benchmark."""

    stream: str
    frames: int = 0
    dropped_frames: int = 0
    source_reconnects: int = 0
    refused_prompts: int = 0
    published: int = 0
    lost_messages: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # decode -> handed to the sinks, seconds

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


FrameCallback = Callable[[Frame, MaskMessage], None]


class StreamRunner:
    """One stream through the engine.

    `initial_prompts` maps a source frame index to the prompts applied on that frame
    (the CLI's --mask/--point/--box at --prompt-frame). Prompts from MQTT apply to the
    next frame processed.
    """

    def __init__(
        self,
        source: FrameSource,
        tracker: Tracker,
        inference: InferenceQueue,
        folder: FolderSink | None = None,
        mqtt: MqttLink | None = None,
        initial_prompts: dict[int, list[AddPrompt]] | None = None,
        max_frames: int | None = None,
        progress: bool = False,
        on_frame: FrameCallback | None = None,
    ) -> None:
        self.source = source
        self.stream = source.name
        self.tracker = tracker
        self.inference = inference
        self.folder = folder
        self.mqtt = mqtt
        self.initial_prompts = dict(initial_prompts or {})
        self.max_frames = max_frames
        self.progress = progress
        self.on_frame = on_frame
        self.report = StreamReport(self.stream)
        self._prompts: list[PromptMessage] = []
        if mqtt is not None:
            mqtt.on_prompt = self.add_prompt_message

    def add_prompt_message(self, message: PromptMessage) -> None:
        """Queue a prompt for the next frame (called on the event loop)."""
        self._prompts.append(message)

    def _refuse(self, error: str, message: PromptMessage) -> None:
        self.report.refused_prompts += 1
        log.warning("stream %s: prompt refused: %s", self.stream, error)
        if self.mqtt is not None:
            self.mqtt.publish_error(error, message.model_dump_json())

    def _apply_prompts(self, frame: Frame) -> None:
        """Initial prompts that do not fit the frame stop the stream (ConfigError); others are refused."""
        hw = frame.image.shape[:2]
        for message in self.initial_prompts.pop(frame.index, []):
            try:
                prompt = message.to_prompt()
                prompt.check_size(hw)
            except ValueError as e:
                raise ConfigError(f"prompt for object {message.obj_id} on frame {frame.index}: {e}") from None
            self.tracker.set_prompt(message.obj_id, prompt)
        messages, self._prompts = self._prompts, []
        for message in messages:
            if isinstance(message, Reset):
                self.tracker.reset()
            elif isinstance(message, RemoveObject):
                if message.obj_id not in self.tracker.object_ids:
                    self._refuse(f"unknown object id {message.obj_id}", message)
                else:
                    self.tracker.remove_object(message.obj_id)
            else:
                try:
                    prompt = message.to_prompt()
                    prompt.check_size(hw)
                except ValueError as e:
                    self._refuse(f"object {message.obj_id}: {e}", message)
                    continue
                self.tracker.set_prompt(message.obj_id, prompt)

    def _status(self, state: str, detail: str = "") -> None:
        if self.mqtt is None:
            return
        self.mqtt.publish_status(StatusMessage(
            stream=self.stream, state=state, detail=detail, frames=self.report.frames,
            dropped_frames=self.source.stats.dropped, source_reconnects=self.source.stats.reconnects,
            dropped_messages=self.mqtt.stats.dropped,
        ))

    def _encode(self, frame: Frame, result: TrackResult) -> tuple[MaskMessage, np.ndarray]:
        """Blocking: the frame's label map and its message (each object's mask is its label-map pixels)."""
        h, w = frame.image.shape[:2]
        labels = merge_masks(result.masks, result.logits, (h, w))
        objects = [ObjectMask.from_mask(i, labels == i, result.scores[i]) for i in sorted(result.masks)]
        message = MaskMessage(stream=self.stream, frame_index=frame.index, pts=frame.pts, width=w, height=h, objects=objects)
        if self.folder is not None:
            self.folder.write(message, labels)
        return message, labels

    async def _write(self, results: asyncio.Queue) -> None:
        while (item := await results.get()) is not None:
            frame, result = item
            message, _ = await asyncio.to_thread(self._encode, frame, result)
            if self.mqtt is not None:
                self.mqtt.publish_masks(message)
            self.report.latencies.append(time.monotonic() - frame.decoded_at)
            if self.on_frame is not None:
                self.on_frame(frame, message)

    def _on_source_status(self, state: str, detail: str) -> None:
        """The source's connection events as the stream's status (its end is published by `run`)."""
        log.info("stream %s: source %s %s", self.stream, state, detail)
        if state in SOURCE_STATUS:
            self._status(SOURCE_STATUS[state], f"source {state}: {detail}".strip())

    async def run(self) -> StreamReport:
        """Processes the stream until the source ends, `max_frames`, or cancellation."""
        from tqdm import tqdm

        loop = asyncio.get_running_loop()
        self.source.on_status = lambda state, detail: loop.call_soon_threadsafe(self._on_source_status, state, detail)
        total = self.source.length
        if self.max_frames is not None:
            total = self.max_frames if total is None else min(total, self.max_frames)
        bar = tqdm(total=total, desc=self.stream, unit="frame", disable=not self.progress, dynamic_ncols=True)
        results: asyncio.Queue = asyncio.Queue(maxsize=2)
        writer = asyncio.create_task(self._write(results), name=f"write-{self.stream}")
        self._status("online")
        start = time.monotonic()
        state, detail = "ended", ""
        try:
            async with contextlib.aclosing(self.source.frames()) as frames:  # stops the decoder on break
                async for frame in frames:
                    if writer.done():
                        writer.result()
                    self._apply_prompts(frame)
                    result = await self.inference.step(self.tracker, frame.image)
                    await results.put((frame, result))
                    self.report.frames += 1
                    bar.update()
                    if self.max_frames is not None and self.report.frames >= self.max_frames:
                        break
            await results.put(None)
            await writer
        except BaseException as e:
            state, detail = "offline", f"{type(e).__name__}: {e}"
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            raise
        finally:
            bar.close()
            self.report.seconds = time.monotonic() - start
            self.report.dropped_frames = self.source.stats.dropped
            self.report.source_reconnects = self.source.stats.reconnects
            self._status(state, detail)
            if self.folder is not None:
                self.folder.close()
            if self.mqtt is not None:
                self.report.lost_messages = await self.mqtt.close()
                self.report.published = self.mqtt.stats.published
        return self.report
