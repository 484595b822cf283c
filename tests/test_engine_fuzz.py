"""The engine under 1,000 fuzzed prompt messages over MQTT while it tracks: it stays up, answers every
malformed message, applies every valid one, publishes every frame's masks in order, and its RSS stays bounded."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os

import aiomqtt
import numpy as np
import pytest
from PIL import Image

import vos
from tests.mqtt_broker import Subscriber
from tests.prompt_fuzz import fuzzed_prompts
from vos.streams.messages import MaskMessage, Rle
from vos.streams.prompt_inbox import MAX_PENDING_PROMPTS

MESSAGES = 1000
FRAMES = 1000  # more than the run needs; it is stopped once every prompt is applied
HEIGHT, WIDTH = 48, 64
OBJECT_IDS = (1, 2, 3)  # few objects: frames stay fast and far from max_objects (16)
WARM_UP = 3  # frames tracked (three objects) before RSS is first read
MAX_RSS_GROWTH = 100 * 2**20
INITIAL_BOXES = {1: [4, 4, 30, 30], 2: [30, 10, 60, 40], 3: [10, 20, 40, 46]}


class ValidPrompts:
    """Makes valid prompts the engine applies without a refusal, following the objects it will track (`states`:
    the sorted object ids before any prompt and after each): adds of objects 1..3 (clicks, a box or a mask of the
    frame's size), removes of a tracked object, resets."""

    def __init__(self, objects: set[int]) -> None:
        self.objects = set(objects)
        self.states: list[tuple[int, ...]] = [tuple(sorted(objects))]

    def __call__(self, rng: np.random.Generator) -> dict:
        kind = rng.choice(["add"] * 6 + ["remove"] * 3 + ["reset"])
        if kind == "reset":
            self.objects.clear()
            message = {"action": "reset"}
        elif kind == "remove" and self.objects:
            obj_id = int(rng.choice(sorted(self.objects)))
            self.objects.discard(obj_id)
            message = {"action": "remove", "obj_id": obj_id}
        else:
            obj_id = int(rng.choice(OBJECT_IDS))
            self.objects.add(obj_id)
            message = {"action": "add", "obj_id": obj_id, **self._prompt(rng)}
        self.states.append(tuple(sorted(self.objects)))
        return message

    @staticmethod
    def _prompt(rng: np.random.Generator) -> dict:
        x0, y0 = int(rng.integers(0, WIDTH // 2)), int(rng.integers(0, HEIGHT // 2))
        x1, y1 = x0 + int(rng.integers(4, WIDTH // 2)), y0 + int(rng.integers(4, HEIGHT // 2))
        kind = rng.integers(3)
        if kind == 0:
            return {"points": [[(x0 + x1) / 2, (y0 + y1) / 2], [x0, y1]], "labels": [1, 0]}
        if kind == 1:
            return {"box": [x0, y0, x1, y1]}
        mask = np.zeros((HEIGHT, WIDTH), bool)
        mask[y0:y1, x0:x1] = True
        return {"mask": Rle.from_mask(mask).model_dump()}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """A folder of small frames: a bright square moving over a gradient."""
    folder = tmp_path_factory.mktemp("fuzz_frames")
    background = np.linspace(0, 120, WIDTH, dtype=np.uint8)[None, :, None].repeat(HEIGHT, 0).repeat(3, 2)
    for i in range(FRAMES):
        image = background.copy()
        x = 5 + i % (WIDTH - 25)
        image[12:32, x : x + 20] = (230, 200, 40)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return folder


def rss() -> int:
    """Resident bytes once the heap's free pages went back to the system (glibc keeps what torch frees)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def batches(messages: list[tuple[bytes, bool]], most_valid: int) -> list[list[tuple[bytes, bool]]]:
    """Consecutive runs of messages with at most `most_valid` valid ones, each closed by a malformed marker whose
    answer says that every message before it has been received."""
    out: list[list[tuple[bytes, bool]]] = [[]]
    valid = 0
    for payload, ok in messages:
        if ok and valid == most_valid:
            out.append([])
            valid = 0
        out[-1].append((payload, ok))
        valid += ok
    return [[*batch, (b"end of batch %d" % i, False)] for i, batch in enumerate(out)]


def follows(seen: list[tuple[int, ...]], states: list[tuple[int, ...]]) -> bool:
    """Each frame's objects are the objects after some prefix of the prompts, prefixes never shrinking."""
    position = 0
    for objects in seen:
        while position < len(states) and states[position] != objects:
            position += 1
        if position == len(states):
            return False
    return True


def test_a_thousand_fuzzed_prompts_while_tracking(frames, tracking_checkpoint, broker):
    """Every malformed message is answered on the errors topic, in order, and nothing else is (so every valid
    one was applied); each frame's objects follow the valid prompts in order and the last frames show them all
    applied; the masks topic has every frame once, in order; RSS grows less than 100 MB."""
    from vos.engine import Engine, EngineConfig, StreamSettings
    from vos.streams.sinks.mqtt import MqttSettings

    valid = ValidPrompts(set(INITIAL_BOXES))
    prompts = [{"obj_id": i, "box": box} for i, box in INITIAL_BOXES.items()]
    stream = StreamSettings(source=str(frames), id="cam", prompts=prompts)
    sent = batches(fuzzed_prompts(MESSAGES, seed=1, valid=valid), MAX_PENDING_PROMPTS)
    malformed = [p for batch in sent for p, ok in batch if not ok]

    async def main():
        model = vos.load_model(checkpoint=tracking_checkpoint, image_size=512)
        mqtt = MqttSettings(port=broker.port, prefix="fuzz")
        async with Subscriber(broker.port, "fuzz/cam/masks") as masks, Subscriber(broker.port, "fuzz/cam/errors", identifier="errors") as errors:
            async with Engine(EngineConfig(streams=[stream], mqtt=mqtt), model) as engine:
                task = asyncio.create_task(engine.run())
                assert await masks.wait_for(lambda m: len(m) >= WARM_UP, 60)
                before = rss()
                inbox, answered = engine.runners[0].inbox, 0
                async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                    for batch in sent:  # one at a time, so that no valid prompt waits beyond the inbox's limit
                        for payload, _ in batch:
                            await client.publish("fuzz/cam/prompts", payload, qos=1)
                        answered += sum(not ok for _, ok in batch)
                        assert await errors.wait_for(lambda m: len(m) >= answered, 60)  # the batch arrived ...
                        assert await errors.wait_for(lambda m: not inbox, 60) and not task.done()  # ... a frame took it
                last = engine.runners[0].stats().frames  # the frame that took the last prompts, or one before it
                assert await masks.wait_for(lambda m: len(m) > last, 60) and not task.done()
                growth = rss() - before
                engine.stop()
                [report] = await task
            assert await masks.wait_for(lambda m: len(m) >= report.frames, 10)
        return masks.messages, errors.messages, report, growth

    published, refusals, report, growth = asyncio.run(main())
    assert report.state == "stopped" and report.error is None
    decoded = [MaskMessage.model_validate_json(p) for _, p in published]
    assert [m.frame_index for m in decoded] == list(range(report.frames))
    assert [json.loads(p)["payload"] for _, p in refusals] == [p.decode("utf-8", "replace")[:200] for p in malformed]  # 200 characters
    assert report.stats.refused_prompts == len(malformed)
    objects = [tuple(o.id for o in m.objects) for m in decoded]
    assert follows(objects, valid.states), (objects, valid.states)
    assert objects[0] == valid.states[0] and objects[-1] == valid.states[-1] and len(set(objects)) > 1
    assert growth < MAX_RSS_GROWTH, growth
