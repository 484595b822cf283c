"""Model work for every stream of an engine, in one thread, with the image encoder batched across streams."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from vos.tracking.tracker import Tracker, TrackResult

TIMING_WINDOW = 1000  # batches whose model time is kept (a rolling window: `vos serve` runs for months)


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
        self.batch_sizes: Counter[int] = Counter()  # image-encoder batches run, by size
        self.seconds: deque[float] = deque(maxlen=TIMING_WINDOW)  # model time of recent batches (encoder + steps)

    async def __aenter__(self) -> InferenceQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

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
            self.batch_sizes[len(active)] += 1
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
