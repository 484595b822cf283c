"""Nothing lost at the end of a run: the MQTT link drains through a broker outage, and a run that still loses
messages says so (exit code 7, counts per topic; `vos batch` fails that video). Against a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

import vos
from tests.mqtt_broker import MosquittoBroker, Subscriber
from tests.test_mqtt import frame_indices, mask_message
from vos.cli.track import _exit_code, prompts_from_args
from vos.engine import Engine, EngineConfig, StreamSettings
from vos.errors import MessagesLost
from vos.streams.messages import MaskMessage
from vos.streams.sinks.mqtt import MqttLink, MqttSettings

SEQUENCE = "car-shadow"
FRAMES = 6
OUTAGE_AT = 3  # the broker is stopped when this frame reaches the sinks
SLOW_BACKOFF = {"reconnect_initial": 5.0, "reconnect_max": 10.0}  # the live back-off would sleep past the broker's return


@pytest.fixture(scope="module")
def model(tracking_checkpoint):
    return vos.load_model(checkpoint=tracking_checkpoint, image_size=512)


@pytest.fixture(scope="module")
def clip(davis_root, tmp_path_factory):
    from tests.conftest import read_frame
    from tests.video_reference import write_video

    path = tmp_path_factory.mktemp("drain") / f"{SEQUENCE}.mp4"
    write_video(path, [read_frame(davis_root, SEQUENCE, i) for i in range(12)])
    return path


def test_close_drains_through_a_broker_restart_without_waiting_out_the_back_off(broker):
    """Messages buffered while the broker is down reach it, in order, once it is back within `flush_timeout`, though
    the link was in a 5 s back-off when `close()` began: draining retries every DRAIN_RETRY."""

    async def main():
        async with Subscriber(broker.port, "t/vos/cam/masks") as sub:
            link = MqttLink(MqttSettings(port=broker.port, prefix="t/vos", flush_timeout=10, **SLOW_BACKOFF), "cam")
            await link.start()
            link.publish_masks(mask_message(0))
            assert await sub.wait_for(lambda m: len(m) == 1, 10)
            await asyncio.to_thread(broker.stop)
            for i in range(1, 6):
                link.publish_masks(mask_message(i))
            await asyncio.sleep(0.5)
            assert not link.stats.connected and link.pending >= 5
            closing = asyncio.create_task(link.close())
            await asyncio.sleep(1.0)
            await asyncio.to_thread(broker.start)
            back = time.monotonic()
            lost = await closing
            drained = time.monotonic() - back
            assert await sub.wait_for(lambda m: len(m) >= 6, 10)
        return sub.messages, lost, drained, link.stats

    messages, lost, drained, stats = asyncio.run(main())
    assert frame_indices(messages, "t/vos/cam/masks") == list(range(6))
    assert lost == 0 and stats.dropped == 0 and not stats.dropped_topics
    assert drained < 3.0, f"close() took {drained:.1f} s after the broker's return: it slept in the back-off"


def test_close_gives_up_after_the_flush_timeout_and_counts_each_topic(broker):
    async def main():
        link = MqttLink(MqttSettings(port=broker.port, prefix="t/vos", flush_timeout=1.0, **SLOW_BACKOFF), "cam")
        await link.start()
        await asyncio.to_thread(broker.stop)
        for i in range(3):
            link.publish_masks(mask_message(i))
        link.publish_status(link._status)
        started = time.monotonic()
        lost = await link.close()
        again = await link.close()  # a second close waits for the first and counts nothing twice
        return lost, again, time.monotonic() - started, link.stats

    lost, again, took, stats = asyncio.run(main())
    assert lost == again == 4 and stats.lost == stats.dropped == 4
    assert stats.dropped_topics == {"t/vos/cam/masks": 3, "t/vos/cam/status": 1}
    assert stats.dropped_text() == "4 MQTT messages lost (t/vos/cam/masks: 3, t/vos/cam/status: 1)"
    assert 0.9 < took < 3.0


class BrokerOutage:
    """A sink that stops the broker when frame `at` is written (its message is already in the link's buffer)."""

    def __init__(self, broker: MosquittoBroker, at: int) -> None:
        self.broker, self.at = broker, at

    async def write(self, frame, message, labels) -> None:
        if frame.index == self.at:
            await asyncio.to_thread(self.broker.stop)


@pytest.mark.parametrize("broker_returns", [True, False], ids=["back-within-the-window", "stays-down"])
def test_file_run_whose_broker_is_down_at_the_end(broker_returns, model, clip, davis_root, broker, capsys):
    """The broker goes down near the end of a file run (as `vos track FILE --mqtt` runs it). Back within the flush
    window: every frame reaches a persistent QoS 1 subscriber in order, exit code 0. Down for good: exit code 7 and
    a message that counts the lost messages per topic; the summary counts them too."""
    first = davis_root / "Annotations" / "480p" / SEQUENCE / "00000.png"
    stream = StreamSettings(source=str(clip), id="file", max_frames=FRAMES, prompts=prompts_from_args([f"1={first}"], [], []))
    mqtt = MqttSettings(port=broker.port, prefix="d", flush_timeout=8.0 if broker_returns else 1.0, **SLOW_BACKOFF)
    config = EngineConfig(streams=[stream], mqtt=mqtt, max_batch=1, heap_trim_interval=0.01)

    async def main():
        async with Subscriber(broker.port, "d/file/masks", identifier="drain") as sub:
            async with Engine(config, model, sinks={"file": [BrokerOutage(broker, OUTAGE_AT)]}) as engine:
                reports = await engine.run()
                link = engine.runners[0].mqtt
                for _ in range(100):  # the client may take a moment to notice the stopped broker
                    if not link.stats.connected:
                        break
                    await asyncio.sleep(0.05)
                assert link.pending >= 2 and not link.stats.connected  # the last frames wait for the broker
                assert engine.runners[0].trim_heap.trims >= 1  # the heap is trimmed between frames (vos.engine.heap)
                if broker_returns:
                    threading.Timer(1.0, broker.start).start()  # while the engine drains its links
            if broker_returns:
                await sub.wait_for(lambda m: len(m) >= FRAMES, 10)
        return reports, sub.messages

    reports, messages = asyncio.run(main())
    indices = [MaskMessage.model_validate_json(p).frame_index for _, p in messages]
    code = _exit_code(reports)
    stderr = capsys.readouterr().err
    [report] = reports
    if broker_returns:
        assert sorted(set(indices)) == list(range(FRAMES)) and indices == sorted(indices)  # at least once, in order
        assert code == 0 and report.error is None and report.stats.dropped_messages == 0, stderr
    else:
        lost_masks = FRAMES - len(set(indices))
        assert lost_masks >= 2 and code == MessagesLost.exit_code == 7
        assert isinstance(report.error, MessagesLost) and report.state == "failed"
        assert f"d/file/masks: {lost_masks}" in stderr and "still undelivered 1 s after the stream's end" in stderr
        assert f"{report.stats.dropped_messages} lost" in stderr and report.stats.dropped_messages > lost_masks


def test_batch_video_whose_messages_are_lost_fails_and_keeps_no_folder(model, clip, davis_root, broker, tmp_path):
    """`vos batch --mqtt`: a video whose messages are lost raises MessagesLost (the pool marks it failed or retries
    it) and leaves no OUT/NAME, so a rerun does it again."""
    from vos.config import TrackerConfig
    from vos.distributed.batch import jobs_from_inputs, track_video

    [job] = jobs_from_inputs([clip], annotations=davis_root / "Annotations" / "480p")
    mqtt = MqttSettings(port=broker.port, prefix="batch", flush_timeout=0.5, **SLOW_BACKOFF)
    out = tmp_path / "out"
    out.mkdir()

    async def main():
        async with Subscriber(broker.port, f"batch/{job.name}/masks") as sub:
            tracking = asyncio.create_task(asyncio.to_thread(track_video, model, job, out, TrackerConfig(), 12, mqtt))
            assert await sub.wait_for(lambda m: len(m) >= 1, 120)
            await asyncio.to_thread(broker.stop)
            with pytest.raises(MessagesLost, match=f"batch/{job.name}/masks"):
                await tracking
        return sub.messages

    messages = asyncio.run(main())
    assert 1 <= len(messages) < 12 and json.loads(messages[0][1])["stream"] == job.name
    assert list(out.iterdir()) == []  # neither the video's folder nor a partial one


def test_mqtt_flush_timeout_flag():
    from vos.cli import build_parser
    from vos.cli.options import mqtt_from_args
    from vos.errors import ConfigError

    parse = lambda *flags: build_parser().parse_args(["track", "clip.mp4", "--out", "o", *flags])  # noqa: E731
    assert mqtt_from_args(parse("--mqtt", "mqtt://127.0.0.1:1884", "--mqtt-flush-timeout", "2.5")).flush_timeout == 2.5
    assert mqtt_from_args(parse("--mqtt", "mqtt://127.0.0.1:1884")).flush_timeout == MqttSettings().flush_timeout == 30
    with pytest.raises(ConfigError, match="flush_timeout"):
        mqtt_from_args(parse("--mqtt", "mqtt://127.0.0.1:1884", "--mqtt-flush-timeout", "-1"))
    with pytest.raises(ConfigError, match="go with --mqtt"):
        mqtt_from_args(parse("--mqtt-flush-timeout", "5"))
