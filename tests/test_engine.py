"""The engine end to end with real components: `vos track` on a video file to Mosquitto and a folder."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

import aiomqtt
import numpy as np
import pytest

import vos
import vos.cli
from tests.conftest import read_frame
from tests.mqtt_broker import Subscriber, free_port
from tests.prompt_fuzz import one_run
from tests.video_reference import write_video
from vos.streams.label_map import read_label_map
from vos.streams.messages import AddPrompt, MaskMessage, Rle
from vos.streams.sources.video_file import VideoFile

SEQUENCE = "car-shadow"
CLIP_FRAMES = 16
MAX_FRAMES = 12
TOPIC = "T/cams"


@pytest.fixture(scope="module")
def clip(davis_root, tmp_path_factory):
    """A full-size (854x480) H.264 clip with B-frames, longer than --max-frames."""
    path = tmp_path_factory.mktemp("engine") / f"{SEQUENCE}.mp4"
    write_video(path, [read_frame(davis_root, SEQUENCE, i) for i in range(CLIP_FRAMES)])
    return path


def vos_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vos.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_track_file_publishes_every_frame_and_writes_the_same_masks(clip, davis_root, tracking_checkpoint, broker, tmp_path):
    """The acceptance run: 12 messages, frames 0..11 in order, one RLE mask per object, equal to the PNGs."""
    first = davis_root / "Annotations" / "480p" / SEQUENCE / "00000.png"
    out = tmp_path / "out"

    async def main():
        async with Subscriber(broker.port, f"{TOPIC}/+/masks") as sub, Subscriber(broker.port, f"{TOPIC}/available", identifier="availability") as available:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vos.cli", "track", str(clip), "--checkpoint", str(tracking_checkpoint),
                "--image-size", "512", "--mask", f"1={first}", "--out", str(out), "--mqtt", broker.url,
                "--topic", TOPIC, "--max-frames", str(MAX_FRAMES), "--quiet",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 300)
            assert proc.returncode == 0, stderr.decode()
            await sub.wait_for(lambda m: len(m) >= MAX_FRAMES, 5)
            await available.wait_for(lambda m: len(m) >= 2, 5)
        return sub.messages, stderr.decode(), [p for _, p in available.messages]

    messages, stderr, availability = asyncio.run(main())
    assert availability == [b"online", b"stopped"]  # the process's availability topic (retained)
    assert f"{MAX_FRAMES} frames in" in stderr and "MQTT messages published, 0 lost" in stderr
    assert {t for t, _ in messages} == {f"{TOPIC}/{SEQUENCE}/masks"}
    decoded = [MaskMessage.model_validate_json(p) for _, p in messages]
    assert [m.frame_index for m in decoded] == list(range(MAX_FRAMES))
    lines = [MaskMessage.model_validate_json(line) for line in (out / "masks.jsonl").read_text().splitlines()]
    assert lines == decoded
    with VideoFile(clip) as video:
        times = video.times
    nonempty = 0
    for m in decoded:
        assert (m.width, m.height) == (854, 480) and m.pts == pytest.approx(times[m.frame_index])
        assert [o.id for o in m.objects] == [1]
        mask = m.objects[0].mask.to_mask()
        assert mask.shape == (480, 854) and int(mask.sum()) == m.objects[0].area
        labels = read_label_map(out / f"{m.frame_index:05d}.png")
        np.testing.assert_array_equal(mask, labels == 1)
        assert set(np.unique(labels)) <= {0, 1}
        nonempty += bool(m.objects[0].area)
    assert nonempty == MAX_FRAMES  # the score head is biased to "present": every frame has a mask
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(MAX_FRAMES)]


def test_engine_masks_equal_the_tracker_alone(clip, davis_root, tracking_checkpoint, tmp_path):
    """The pipeline (threads, batching, encoding) changes nothing: its label maps are the tracker's."""
    from vos.streams.label_map import merge_masks

    out = tmp_path / "out"
    frames = 5
    result = vos_cli(
        "track", str(clip), "--checkpoint", str(tracking_checkpoint), "--image-size", "512", "--quiet",
        "--point", "1=420,300", "--point", "1=100,50,0", "--box", "2=0,0,200,150", "--out", str(out),
        "--max-frames", str(frames),
    )
    assert result.returncode == 0, result.stderr
    tracker = vos.Tracker(vos.load_model(checkpoint=tracking_checkpoint, image_size=512))
    tracker.add_prompt(1, points=[(420, 300), (100, 50)], labels=[1, 0])
    tracker.add_prompt(2, box=(0, 0, 200, 150))
    with VideoFile(clip) as video:
        for i in range(frames):
            r = tracker.step(video[i])
            np.testing.assert_array_equal(read_label_map(out / f"{i:05d}.png"), merge_masks(r.masks, r.logits, (480, 854)))


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["track", "missing.mp4", "--point", "1=1,1", "--out", "{out}"], 5, "no such file or folder: missing.mp4"),
        (["track", "{text}", "--point", "1=1,1", "--out", "{out}"], 5, "cannot open"),
        (["track", "{readme}", "--point", "1=1,1", "--out", "{out}"], 5, "README.txt is a text file, not a video"),
        (["track", "{clip}", "--point", "1=1"], 2, "expected 2 or 3 comma-separated numbers"),
        (["track", "{clip}", "--mask", "1=nothere.png"], 2, "no such file nothere.png"),
        (["track", "{clip}"], 2, "nothing to track"),
        (["track", "{clip}", "--point", "1=1,1"], 2, "nothing would be kept or shown: give --out DIR, --render FILE, --mqtt URL"),
        (["track", "{clip}", "--point", "1=1,1", "--web", "0.0.0.0:8080"], 2, "would let anyone who reaches it steer the tracker"),
        (["track", "{clip}", "--point", "1=1,1", "--web", "0.0.0.0:8080", "--web-token-file", "{out}/none"], 2, "cannot read the viewer token file"),
        (["track", "{clip}", "--point", "1=1,1", "--out", "{out}", "--prompt-frame", "99"], 2, "past the source's 16 frames"),
        (["track", "{clip}", "--point", "1=1,1", "--out", "{out}", "--config", "sam2.1_hiera_s", "--checkpoint", "{ckpt}"], 3, "does not match model config sam2.1_hiera_s"),
        (["track", "{clip}", "--point", "1=1,1", "--checkpoint", "{ckpt}", "--image-size", "512", "--mqtt", "mqtt://127.0.0.1:{port}"], 6, "cannot connect to MQTT broker"),
        (["track", "{clip}", "--point", "1=1,1", "--mqtt", "mqtt://127.0.0.1:{port}", "--topic", "a/#"], 2, "topic prefix 'a/#' cannot hold"),
        (["track", "{clip}", "--point", "1=1,1", "--out", "{out}", "--max-cond-frames", "0"], 2, "--max-cond-frames: Input should be greater than or equal to 1"),
        (["track", "rtsp://127.0.0.1:{port}/cam", "--point", "1=1,1", "--out", "{out}", "--timeout", "2"], 5, "rtsp://127.0.0.1"),
        (["track", "{clip}", "--box", "1=30,30,10,10", "--out", "{out}"], 2, "prompt for object 1: a box needs x1 > x0 and y1 > y0"),
        (["track", "{clip}", "--point", "1=5000,5000", "--out", "{out}", "--checkpoint", "{ckpt}", "--image-size", "512",
          "--quiet"], 2, "point (5000, 5000) lies outside the 854x480 frame"),
        (["track", "{clip}", "--point", "1=1,1", "--out", "{out}", "--checkpoint", "{text}"], 3, "it is not a PyTorch checkpoint"),
    ],
    ids=["missing", "not-a-video", "text-file", "bad-point", "missing-mask", "no-prompt", "no-output", "open-viewer", "viewer-token-file", "prompt-frame", "checkpoint-mismatch",
         "broker-refused", "wildcard-topic", "tracker-option", "rtsp-unreachable", "inverted-box", "point-outside", "text-checkpoint"],
)
def test_errors_a_person_can_act_on(args, code, message, clip, tiny_checkpoint, tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    readme = tmp_path / "README.txt"
    readme.write_text("Track objects in video.\n" * 200)
    fill = {"clip": str(clip), "text": str(text), "readme": str(readme), "ckpt": str(tiny_checkpoint), "port": str(free_port()), "out": str(tmp_path / "out")}
    args = [a.format(**fill) for a in args]
    assert vos.cli.main(args) == code
    err = capsys.readouterr().err
    assert err.startswith("vos: error: ") and message.format(**fill) in err, err
    assert not any(word in err for word in ("pydantic", "Value error", "type=", "weights_only")), err  # plain words
    assert not (tmp_path / "out").exists()  # a failed run leaves no empty masks.jsonl, nor the folder it made


def test_serve_runs_streams_with_a_batched_image_encoder(clip, tracking_checkpoint, broker, tmp_path):
    """Two streams of one config; VOS_ variables override the YAML; frames ready together share a batch."""
    frames = 3
    config = tmp_path / "engine.yaml"
    config.write_text(
        "model: {checkpoint: %s, image_size: 512}\n"
        "mqtt: {host: 127.0.0.1, port: 1, prefix: srv}\n"
        "streams:\n" % tracking_checkpoint
        + "".join(
            f"  - {{id: {name}, source: '{clip}', out: '{tmp_path / name}', max_frames: {frames},"
            " prompts: [{frame: 0, obj_id: 3, box: [300, 200, 600, 420]}]}\n"
            for name in ("a", "b")
        )
    )

    async def main():
        async with Subscriber(broker.port, "srv/+/masks") as sub:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vos.cli", "serve", str(config), stderr=asyncio.subprocess.PIPE,
                env={**__import__("os").environ, "VOS_MQTT__PORT": str(broker.port)},
            )
            _, stderr = await asyncio.wait_for(proc.communicate(), 300)
            assert proc.returncode == 0, stderr.decode()
            await sub.wait_for(lambda m: len(m) >= 2 * frames, 5)
        return sub.messages, stderr.decode()

    messages, log = asyncio.run(main())
    by_stream = {name: [MaskMessage.model_validate_json(p) for t, p in messages if t == f"srv/{name}/masks"] for name in "ab"}
    for name, got in by_stream.items():
        assert [m.frame_index for m in got] == list(range(frames)) and all([o.id for o in m.objects] == [3] for m in got)
    # Same frames, same masks: up to float rounding, which depends on which frames shared an encoder batch.
    for a, b in zip(by_stream["a"], by_stream["b"]):
        for x, y in zip(a.objects, b.objects):
            assert abs(x.score - y.score) < 1e-3 and (x.mask.to_mask() != y.mask.to_mask()).mean() < 1e-3
    for i in range(frames):
        labels = [read_label_map(tmp_path / name / f"{i:05d}.png") for name in "ab"]
        assert (labels[0] != labels[1]).mean() < 1e-3
    batches = re.search(r"image-encoder batches: (.*)", log).group(1)
    assert "of 2" in batches, log


def test_engine_config_is_validated_once_with_every_problem(tmp_path):
    from vos.configs import ENGINE_EXAMPLE
    from vos.engine.settings import load_engine_config
    from vos.errors import ConfigError

    shipped = load_engine_config(ENGINE_EXAMPLE)
    assert [s.id for s in shipped.streams] == ["demo"] and shipped.mqtt.qos == 1
    assert shipped.streams[0].source.startswith("lavfi:")  # runs without a camera
    bad = tmp_path / "bad.yaml"
    bad.write_text("streams: [{id: a/b, source: x.mp4}, {id: c, source: y.mp4, prompts: [{obj_id: 0, box: [1, 2]}]}]\nbogus: 1\n")
    with pytest.raises(ConfigError) as e:
        load_engine_config(bad)
    for problem in ("streams.0.id", "cannot be used in an MQTT topic", "streams.1.prompts.0.obj_id", "streams.1.prompts.0.box", "bogus"):
        assert problem in str(e.value)
    with pytest.raises(ConfigError, match="engine config not found"):
        load_engine_config(tmp_path / "none.yaml")
    bad.write_text("streams: [{id: a\n")
    with pytest.raises(ConfigError, match="cannot read engine config .*bad.yaml: while parsing"):
        load_engine_config(bad)


def test_live_camera_prompt_over_mqtt_and_camera_restart(rtsp_server, tracking_checkpoint, broker):
    """An RTSP camera with no object: a prompt sent over MQTT mid-stream starts tracking; malformed and
    unknown-object prompts are answered on the errors topic; the camera is killed and restarted, the
    source reconnects and the object is still tracked (its memory kept)."""
    from vos.engine import Engine, EngineConfig, StreamSettings
    from vos.streams.sinks.mqtt import MqttSettings
    from vos.streams.sources import LiveSettings

    async def main():
        model = vos.load_model(checkpoint=tracking_checkpoint, image_size=512)
        live = LiveSettings(timeout=2.0, reconnect_initial=0.2, reconnect_max=1.0)
        async with Subscriber(broker.port, "live/cam/#") as sub:
            config = EngineConfig(streams=[StreamSettings(source=rtsp_server.url, id="cam")], mqtt=MqttSettings(port=broker.port, prefix="live"), live=live)
            engine = Engine(config, model)
            async with engine:
                source = engine.runners[0].source
                task = asyncio.create_task(engine.run())

                def masks(m):
                    return [MaskMessage.model_validate_json(p) for t, p in m if t == "live/cam/masks"]

                assert await sub.wait_for(lambda m: len(masks(m)) >= 2, 60)
                assert all(not x.objects for x in masks(sub.messages))
                async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                    for payload in (b'{"action": "add", "obj_id": 5, "points": "everywhere"}', b'{"action": "remove", "obj_id": 9}',
                                    AddPrompt(obj_id=7, mask=Rle.from_mask(np.ones((48, 64), bool))).model_dump_json().encode(),
                                    b'{"action": "add", "obj_id": 5, "box": [300, 200, 600, 420]}'):
                        await client.publish("live/cam/prompts", payload, qos=1)
                assert await sub.wait_for(lambda m: any(x.objects for x in masks(m)), 60)
                rtsp_server.stop()
                await asyncio.sleep(1.5)
                rtsp_server.start()
                assert await sub.wait_for(lambda m: source.stats.reconnects >= 1, 60)
                seen = len(masks(sub.messages))
                assert await sub.wait_for(lambda m: len(masks(m)) >= seen + 2, 60)
                engine.stop()
                [report] = await task
                assert report.state == "stopped"
        return sub.messages, report

    messages, report = asyncio.run(main())
    got = [MaskMessage.model_validate_json(p) for t, p in messages if t == "live/cam/masks"]
    indices = [m.frame_index for m in got]
    assert indices == sorted(set(indices)) and report.stats.dropped_frames > 0  # newest frames, stale ones dropped
    first = next(i for i, m in enumerate(got) if m.objects)
    assert all([o.id for o in m.objects] == [5] and o.area for m in got[first:] for o in m.objects)
    assert len(got) - first >= 3 and all(m.objects for m in got[first:])
    errors = [json.loads(p)["error"] for t, p in messages if t == "live/cam/errors"]
    assert len(errors) == 3, errors
    for reason in ("add.points", "unknown object id 9", "object 7: the mask prompt is (48, 64), the frame is (480, 854)"):
        assert any(reason in e for e in errors), (reason, errors)
    states = [json.loads(p)["state"] for t, p in messages if t == "live/cam/status"]
    assert states[0] == "online" and "reconnecting" in states and states[-1] == "stopped"


SLOW_FRAME_SECONDS = 3.0


def test_refusals_are_answered_on_receipt_while_a_frame_takes_seconds(clip, tracking_checkpoint, broker, monkeypatch):
    """Refusals do not wait for the model: with frames that take seconds, prompts that cannot fit the stream's
    854x480 frames (an 84-byte message declaring a 16384² mask, a click outside) and a malformed one are answered
    on the errors topic on receipt, long before the frame being tracked is done."""
    from vos.engine import Engine, EngineConfig, StreamSettings
    from vos.streams.sinks.mqtt import MqttSettings
    from vos.tracking.tracker import Tracker

    step = Tracker.step

    def slow_step(self, *args, **kwargs):
        time.sleep(SLOW_FRAME_SECONDS)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, "step", slow_step)
    huge = json.dumps({"action": "add", "obj_id": 2, "mask": {"size": [16384, 16384], "counts": one_run(16384**2)}})
    refused = [
        huge.encode(),
        b'{"action": "add", "obj_id": 2, "points": [[5000, 5000]], "labels": [1]}',
        b'{"action": "add", "obj_id": 5, "points": "everywhere"}',
    ]

    async def main():
        model = vos.load_model(checkpoint=tracking_checkpoint, image_size=512)
        stream = StreamSettings(source=str(clip), id="cam", max_frames=3, prompts=[{"obj_id": 1, "box": [300, 200, 600, 420]}])
        async with Subscriber(broker.port, "slow/cam/#") as sub:
            config = EngineConfig(streams=[stream], mqtt=MqttSettings(port=broker.port, prefix="slow"))
            async with Engine(config, model) as engine:
                task = asyncio.create_task(engine.run())
                assert await sub.wait_for(lambda m: any(t == "slow/cam/masks" for t, _ in m), 120)
                async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                    sent = time.monotonic()
                    for payload in refused:
                        await client.publish("slow/cam/prompts", payload, qos=1)
                assert await sub.wait_for(lambda m: sum(t == "slow/cam/errors" for t, _ in m) >= len(refused), 60)
                await task
        return sub, sent

    sub, sent = asyncio.run(main())
    arrivals = list(zip(sub.times, (t for t, _ in sub.messages)))
    errors = [(at, json.loads(p)["error"]) for (t, p), at in zip(sub.messages, sub.times) if t == "slow/cam/errors"]
    masks = [at for at, t in arrivals if t == "slow/cam/masks"]
    assert len(errors) == len(refused) and len(masks) == 3, (errors, masks)
    for reason in ("the mask prompt is (16384, 16384), the frame is (480, 854)",
                   "point (5000, 5000) lies outside the 854x480 frame", "add.points"):  # fmt: skip
        assert any(reason in e for _, e in errors), (reason, errors)
    print(f"refusals answered {', '.join(f'{1000 * (at - sent):.0f}' for at, _ in errors)} ms after publishing")
    # the second frame's masks come SLOW_FRAME_SECONDS after the first's at the earliest; every refusal before them
    assert all(sent < at < masks[1] and at - sent < SLOW_FRAME_SECONDS / 3 for at, _ in errors), (sent, errors, masks)


def test_broker_restart_mid_run_loses_nothing(clip, davis_root, tracking_checkpoint, broker):
    """The broker is killed and restarted while a file is tracked: no crash, every frame's message
    reaches a subscriber with a persistent session (QoS 1), none is counted as lost."""
    from vos.cli.track import prompts_from_args
    from vos.engine import Engine, EngineConfig, StreamSettings
    from vos.streams.sinks.mqtt import MqttSettings

    frames = 10
    first = davis_root / "Annotations" / "480p" / SEQUENCE / "00000.png"
    stream = StreamSettings(source=str(clip), id="file", max_frames=frames, prompts=prompts_from_args([f"1={first}"], [], []))
    mqtt = MqttSettings(port=broker.port, prefix="b", reconnect_initial=0.2, reconnect_max=1.0)

    async def main():
        model = vos.load_model(checkpoint=tracking_checkpoint, image_size=512)
        async with Subscriber(broker.port, "b/file/masks", identifier="persistent") as sub:
            async with Engine(EngineConfig(streams=[stream], mqtt=mqtt), model) as engine:
                task = asyncio.create_task(engine.run())
                assert await sub.wait_for(lambda m: len(m) >= 2, 120)
                broker.stop()
                await asyncio.sleep(3)
                link = engine.runners[0].mqtt
                assert not link.stats.connected
                broker.start()
                [report] = await asyncio.wait_for(task, 300)
            await sub.wait_for(lambda m: {MaskMessage.model_validate_json(p).frame_index for _, p in m} >= set(range(frames)), 15)
        return sub.messages, report, link.stats

    messages, report, stats = asyncio.run(main())
    indices = [MaskMessage.model_validate_json(p).frame_index for _, p in messages]
    assert set(indices) == set(range(frames)) and indices == sorted(indices)  # at least once, in order
    assert report.frames == frames and report.stats.lost_messages == 0 and stats.reconnects >= 1 and stats.dropped == 0


class Recorder:
    """A caller's own sink: keeps what the engine writes."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, MaskMessage, np.ndarray]] = []

    async def write(self, frame, message: MaskMessage, labels: np.ndarray) -> None:
        self.frames.append((frame.index, message, labels))


def test_python_api_skips_unreadable_frames_and_keeps_every_tracked_one_when_the_source_breaks(
    davis_root, tracking_checkpoint, tmp_path, monkeypatch
):
    """A frame folder with unreadable files (and a sub-folder named like a frame): one bad frame is skipped
    and counted, its index left out; two in a row (the limit, lowered here) end the source. Every frame
    tracked before that reaches every sink (folder PNGs, masks.jsonl, the caller's sink), and the
    report says the stream failed and why."""
    import vos.streams.sources.sequence
    from vos.engine import Engine, EngineConfig, StreamSettings
    from vos.streams.sinks import Sink

    monkeypatch.setattr(vos.streams.sources.sequence, "MAX_SKIPS_IN_A_ROW", 1)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (0, 1, 2, 3, 5):
        (frames / f"{i:05d}.jpg").write_bytes((davis_root / "JPEGImages" / "480p" / SEQUENCE / f"{i:05d}.jpg").read_bytes())
    for i in (4, 6, 7):
        (frames / f"{i:05d}.jpg").write_text("not a JPEG")
    (frames / "00008.jpg").mkdir()
    out = tmp_path / "out"
    recorder = Recorder()
    assert isinstance(recorder, Sink)
    stream = StreamSettings(source=str(frames), id="cut", out=out, prompts=[{"obj_id": 2, "box": [300, 200, 600, 420]}])

    async def main():
        model = vos.load_model(checkpoint=tracking_checkpoint, image_size=512)
        async with Engine(EngineConfig(streams=[stream]), model, sinks={"cut": [recorder]}) as engine:
            return await engine.run()

    [report] = asyncio.run(main())
    assert report.state == "failed" and "2 unreadable frames in a row" in str(report.error), report
    assert report.frames == 5 and report.stats.skipped_frames == 2 and "2 unreadable frames skipped" in report.summary()
    assert [i for i, _, _ in recorder.frames] == [0, 1, 2, 3, 5]
    lines = [MaskMessage.model_validate_json(line) for line in (out / "masks.jsonl").read_text().splitlines()]
    assert lines == [m for _, m, _ in recorder.frames] and all([o.id for o in m.objects] == [2] for m in lines)
    for i, _, labels in recorder.frames:
        np.testing.assert_array_equal(read_label_map(out / f"{i:05d}.png"), labels)


def test_a_camera_down_at_start_does_not_stop_the_other_streams(clip, tracking_checkpoint, tmp_path):
    """`vos serve` semantics (wait_for_cameras): the file stream runs to its end while the dead camera
    keeps being retried; stopping the engine then stops the camera's stream cleanly."""
    from vos.engine import Engine, EngineConfig, StreamSettings
    from vos.streams.sources import LiveSettings

    streams = [
        StreamSettings(source=str(clip), id="file", out=tmp_path / "file", max_frames=3, prompts=[{"obj_id": 1, "box": [300, 200, 600, 420]}]),
        StreamSettings(source=f"rtsp://127.0.0.1:{free_port()}/cam", id="cam"),
    ]

    async def main():
        model = vos.load_model(checkpoint=tracking_checkpoint, image_size=512)
        live = LiveSettings(timeout=1.0, reconnect_initial=0.1, reconnect_max=0.5)
        async with Engine(EngineConfig(streams=streams, live=live), model, wait_for_cameras=True) as engine:
            task = asyncio.create_task(engine.run())
            file_report = engine.runners[0].report
            async with asyncio.timeout(120):
                while file_report.state != "ended":
                    await asyncio.sleep(0.1)
            assert not task.done()
            engine.stop()
            return await task, engine.runners[1].source.stats.last_error

    (file_report, cam_report), error = asyncio.run(main())
    assert file_report.frames == 3 and cam_report.state == "stopped" and cam_report.frames == 0
    assert "Connection refused" in error
    assert sorted(p.name for p in (tmp_path / "file").glob("*.png")) == ["00000.png", "00001.png", "00002.png"]

