"""The engine's overhead and live latency: `vos track` against the tracker alone, and decode -> MQTT delivery.

1. Throughput: a DAVIS clip (H.264 mp4, full 854x480 frames, one object prompted by its first
   annotation, random weights of `--model` (sam2.1_hiera_t; edgetam, efficienttam_ti_512x512, ...) with objects
   present) through
   - the tracker alone: frames decoded into RAM beforehand, only `Tracker.step` timed;
   - the engine `vos track CLIP --mask ... --out DIR --mqtt ...` builds, against a real Mosquitto:
     decoding, tracking, label maps, RLE, PNG + JSON lines, MQTT QoS 1; the engine's own
     "N frames in X s".
   Both run on one model loaded once, in turns in this process, `ROUNDS` times: speed differs
   by up to ~15 % between fresh processes, and between loads of the same weights in one process,
   on our 2-core machines (memory layout, page faults): more than what is measured here.
   Then `vos track` once as a process of its own, for its wall time with start-up and model load.
2. Live latency: the engine in this process on an RTSP camera (GStreamer's RTSP server at
   10 frames/s, as the tests start it), masks to Mosquitto, and a subscriber here: for every
   processed frame, seconds from the frame's decode to the subscriber receiving its message.

    python benchmarks/bench_engine.py [--model edgetam] [--frames 30] [--size 512] [--precision auto]
        [--live-frames 20] [--backend openvino]

`--backend onnxruntime` / `openvino`: the graphs `vos export onnx` writes (exported first, into the temporary
folder), run by that runtime at `--precision`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_speed import cpu_description  # noqa: E402

from tests.conftest import DEFAULT_DAVIS, OBJECT_SCORE_BIAS_OFFSET, read_frame  # noqa: E402
from tests.mqtt_broker import MosquittoBroker, Subscriber  # noqa: E402
from tests.rtsp_fixtures import (  # noqa: E402
    CAMERA_X264_OPTIONS,
    RtspServer,
    free_port,
    rtsp_server_missing,
)
from tests.video_reference import write_video  # noqa: E402
from vos.build import build_model, load_model  # noqa: E402
from vos.cli.track import prompts_from_args  # noqa: E402
from vos.engine import Engine, EngineConfig, StreamSettings  # noqa: E402
from vos.modeling.sam2 import SAM2Model  # noqa: E402
from vos.streams.label_map import read_mask_png  # noqa: E402
from vos.streams.messages import MaskMessage  # noqa: E402
from vos.streams.sinks.mqtt import MqttSettings  # noqa: E402
from vos.streams.sources.video_file import VideoFile  # noqa: E402
from vos.tracking.tracker import Tracker  # noqa: E402

SEED = 0
LIVE_FPS = 10
LIVE_GOP = 10
ROUNDS = 3


def prepare(folder: Path, davis: Path, sequence: str, n: int, config: str, size: int) -> tuple[Path, Path, Path]:
    """The clip, its first annotation and random weights of `config` (objects present)."""
    clip = folder / f"{sequence}.mp4"
    write_video(clip, [read_frame(davis, sequence, i) for i in range(n)])
    torch.manual_seed(SEED)
    sd = build_model(config, image_size=size).state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += OBJECT_SCORE_BIAS_OFFSET
    weights = folder / "weights.pt"
    torch.save({"model": sd}, weights)
    return clip, davis / "Annotations" / "480p" / sequence / "00000.png", weights


def tracker_alone(model: SAM2Model, clip: Path, mask_png: Path) -> float:
    """Seconds of `Tracker.step` over every frame of the clip."""
    tracker = Tracker(model)
    with VideoFile(clip) as video:
        frames = list(video)
    tracker.add_prompt(1, mask=read_mask_png(mask_png, 1))
    start = time.perf_counter()
    for frame in frames:
        tracker.step(frame)
    return time.perf_counter() - start


def vos_track(model: SAM2Model, clip: Path, mask_png: Path, broker: MosquittoBroker, out: Path) -> float:
    """Seconds of the engine `vos track CLIP --mask 1=PNG --out OUT --mqtt URL` builds, run on `model`."""
    stream = StreamSettings(source=str(clip), out=out, prompts=prompts_from_args([f"1={mask_png}"], [], []))
    mqtt = MqttSettings.from_url(broker.url, prefix="bench")

    async def run() -> float:
        async with Engine(EngineConfig(streams=[stream], mqtt=mqtt, max_batch=1), model) as engine:
            [report] = await engine.run()
        if report.error is not None or report.frames == 0:
            raise RuntimeError(f"vos track failed: {report.summary()}: {report.error}")
        return report.seconds

    return asyncio.run(run())


def vos_track_process(
    clip: Path, mask_png: Path, config: str, weights: Path, size: int, precision: str, broker: MosquittoBroker,
    out: Path, runtime: list[str],
) -> float:  # fmt: skip
    """Wall seconds of `vos track` as a process of its own (start-up and model loading included)."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "vos.cli", "track", str(clip), "--config", config, "--checkpoint", str(weights),
         "--image-size", str(size),
         "--precision", precision, "--mask", f"1={mask_png}", "--out", str(out), "--mqtt", broker.url,
         "--topic", "bench", "--quiet", *runtime],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return time.perf_counter() - start


class DecodeTimes:
    """A sink that notes when each written frame was decoded."""

    def __init__(self) -> None:
        self.decoded_at: dict[int, float] = {}

    async def write(self, frame, message, labels) -> None:
        self.decoded_at[frame.index] = frame.decoded_at


async def live_latency(server: RtspServer, broker: MosquittoBroker, load, frames: int, box) -> dict:
    received: dict[int, float] = {}
    times = DecodeTimes()
    stream = StreamSettings(source=server.url, id="cam", max_frames=frames, prompts=[{"obj_id": 1, "box": box}])
    model = load()
    async with Subscriber(broker.port, "live/cam/masks", identifier="bench-live") as sub:
        mqtt = MqttSettings(port=broker.port, prefix="live")
        async with Engine(EngineConfig(streams=[stream], mqtt=mqtt, max_batch=1), model, sinks={"cam": [times]}) as engine:
            [report] = await engine.run()
        await sub.wait_for(lambda m: len(m) >= report.frames, 10)
    for (_, payload), t in zip(sub.messages, sub.times):
        received[MaskMessage.model_validate_json(payload).frame_index] = t
    latencies = [received[i] - times.decoded_at[i] for i in times.decoded_at if i in received]
    return {"report": report, "latencies": latencies, "model": list(engine.inference.seconds)}


def fps_list(frames: int, seconds: list[float]) -> str:
    return ", ".join(f"{frames / s:.3f}" for s in seconds)


def summary(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"median {statistics.median(values):.3f} s, p90 {p90:.3f} s, max {values[-1]:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_t", help="config name: sam2.1_hiera_t, edgetam, ...")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=512, choices=(512, 1024))
    parser.add_argument("--sequence", default="car-shadow")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8", "auto"))
    parser.add_argument("--davis", type=Path, default=DEFAULT_DAVIS)
    parser.add_argument("--live-frames", type=int, default=20, help="frames processed from the RTSP camera (0: skip)")
    parser.add_argument("--backend", default="pytorch", choices=("pytorch", "onnxruntime", "openvino"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip, mask_png, weights = prepare(folder, args.davis, args.sequence, args.frames, args.model, args.size)
        runtime = []
        if args.backend != "pytorch":
            from vos.export.onnx import OnnxExportSettings, export_onnx

            exported = load_model(args.model, checkpoint=weights, image_size=args.size)
            export_onnx(exported, folder / "onnx", OnnxExportSettings(), checkpoint=weights)
            runtime = ["--backend", args.backend, "--onnx-dir", str(folder / "onnx")]

        def load() -> SAM2Model:
            extra = {} if args.backend == "pytorch" else {"backend": args.backend, "onnx_dir": folder / "onnx"}
            return load_model(args.model, checkpoint=weights, image_size=args.size, precision=args.precision, **extra)

        broker = MosquittoBroker(folder / "broker")
        broker.start()
        try:
            model = load()
            alone, engine = [], []
            for r in range(ROUNDS):
                alone.append(tracker_alone(model, clip, mask_png))
                engine.append(vos_track(model, clip, mask_png, broker, folder / f"out{r}"))
            del model
            wall = vos_track_process(
                clip, mask_png, args.model, weights, args.size, args.precision, broker, folder / "out", runtime
            )
            n = args.frames
            malloc = " ".join(f"{k}={v}" for k, v in os.environ.items() if k.startswith("MALLOC_")) or "glibc defaults"
            print(f"## Throughput: {args.model}, {n} frames of {args.sequence} (854x480 H.264), {args.size} px, "
                  "one object, "
                  f"{args.backend} {args.precision}, {torch.get_num_threads()} torch threads, malloc: {malloc}; "
                  f"{cpu_description()}")  # fmt: skip
            print(f"rounds of the tracker alone and vos track, alternately in this process: {ROUNDS}")
            print(f"tracker alone (frames in RAM), frames/s:           {fps_list(n, alone)}")
            print(f"vos track (decode+track+PNG+JSONL+MQTT), frames/s: {fps_list(n, engine)}")
            best, mean = min(alone) / min(engine), sum(alone) / sum(engine)
            print(f"ratio vos track / tracker alone: best {best:.3f}, mean {mean:.3f}")
            print(f"vos track as its own process, with start-up and model load: {n / wall:.3f} frames/s")

            if args.live_frames:
                reason = rtsp_server_missing()
                if reason:
                    print(f"## Live latency: skipped ({reason})")
                    return
                live_clip = folder / "live.mp4"
                write_video(live_clip, [read_frame(args.davis, args.sequence, i) for i in range(40)], gop=LIVE_GOP, fps=LIVE_FPS, b_frames=0, options=CAMERA_X264_OPTIONS)
                server = RtspServer(live_clip, free_port(), folder / "rtsp.log")
                server.start()
                try:
                    box = (300.0, 200.0, 600.0, 420.0)
                    live = asyncio.run(live_latency(server, broker, load, args.live_frames, box))
                finally:
                    server.stop()
                report = live["report"]
                print(f"## Live: RTSP camera at {LIVE_FPS} frames/s, {report.frames} frames processed, "
                      f"{report.stats.dropped_frames} stale frames dropped")  # fmt: skip
                print(f"decode -> MQTT message received: {summary(live['latencies'])}")
                print(f"model time per frame (encoder + tracker step): {summary(live['model'])}")
                rest = statistics.median(live["latencies"]) - statistics.median(live["model"])
                print(f"the rest (queue wait, masks encoded, MQTT delivery), median latency - median model time: "
                      f"{rest:.3f} s")  # fmt: skip
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
