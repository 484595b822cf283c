"""RSS of `vos track` under prompts, judged from outside the process as an operator sees it (issue 40).

The engine path at full: `vos track FRAMES --mask 1=PNG --out DIR --mqtt URL` against a real Mosquitto,
on a folder of --frames 854x480 JPEGs cycling a DAVIS sequence, random weights of --model with objects
present. A client here plays the operator over MQTT: on the masks of frame f it sends a correction of
object 1 (a click) when f % 10 == 5, adds object 2 (a box) when f % 25 == 0 and removes it when
f % 25 == 12. RSS (VmRSS of the vos process, /proc) is read on each mask message; the trend is the
least-squares slope over frames >= --warmup, in MB per 100 frames, with its standard error, and over
frames >= --settled alone: by then object 1's corrections have filled its bounded conditioning frames
(16 by default, one per 10 frames), a bounded growth of about 1.3 MB per frame kept (EdgeTAM, 512 px).
Each --env variant (NAME=VALUE[,NAME=VALUE]; "default": none) is one process.

    python benchmarks/bench_rss.py [--model edgetam] [--frames 500] [--size 512] [--env default MALLOC_ARENA_MAX=2]

Target (issue 40): under 5 MB per 100 frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import DEFAULT_DAVIS  # noqa: E402
from tests.mqtt_broker import MosquittoBroker  # noqa: E402

PREFIX = "rss"
STREAM = "cam"
SEED = 0


def cpu_line() -> str:
    """The CPU's name and the flags that decide our kernels."""
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    kinds = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(kinds) or 'none of avx2/avx512'}"


def prepare(folder: Path, davis: Path, sequence: str, n: int, config: str) -> tuple[Path, Path, Path]:
    """n frames cycling the sequence, its first annotation, random weights of `config` (objects present)."""
    import shutil

    from vos.build import save_random_checkpoint

    sources = sorted((davis / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
    frames = folder / "frames"
    frames.mkdir()
    for i in range(n):
        shutil.copyfile(sources[i % len(sources)], frames / f"{i:05d}.jpg")
    weights = save_random_checkpoint(config, folder / "weights.pt", seed=SEED)
    return frames, davis / "Annotations" / "480p" / sequence / "00000.png", weights


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def prompts_after(frame: int, width: int, height: int) -> list[dict]:
    """The operator's prompts on seeing the masks of `frame`."""
    out = []
    if frame % 10 == 5:
        out.append({"action": "add", "obj_id": 1, "points": [[width * 0.5, height * 0.5]], "labels": [1]})
    if frame % 25 == 0:
        out.append({"action": "add", "obj_id": 2, "box": [width * 0.1, height * 0.1, width * 0.4, height * 0.5]})
    if frame % 25 == 12:
        out.append({"action": "remove", "obj_id": 2})
    return out


async def operate(port: int, process: subprocess.Popen, samples: list[tuple[int, float]]) -> None:
    """Prompts the stream and samples the process's RSS on each mask message until the process ends."""
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"{PREFIX}/{STREAM}/masks", qos=1)
        async for message in client.messages:
            masks = json.loads(message.payload)
            rss = rss_mb(process.pid)
            if rss is not None:
                samples.append((masks["frame_index"], rss))
            for prompt in prompts_after(masks["frame_index"], masks["width"], masks["height"]):
                await client.publish(f"{PREFIX}/{STREAM}/prompts", json.dumps(prompt), qos=1)


async def run_variant(
    env_text: str, frames: Path, mask: Path, weights: Path, config: str, size: int, broker: MosquittoBroker, out: Path
) -> tuple[list[tuple[int, float]], int, str]:
    """One `vos track` process with the extra environment `env_text`: RSS samples, exit code, last stderr line."""
    env = dict(os.environ)
    if env_text != "default":
        env.update(item.split("=", 1) for item in env_text.split(","))
    command = [
        sys.executable, "-m", "vos.cli", "track", str(frames), "--config", config, "--checkpoint", str(weights),
        "--image-size", str(size), "--mask", f"1={mask}", "--out", str(out), "--mqtt", broker.url,
        "--topic", PREFIX, "--stream", STREAM, "--quiet",
    ]  # fmt: skip
    samples: list[tuple[int, float]] = []
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    operator = asyncio.create_task(operate(broker.port, process, samples))
    while process.poll() is None:
        await asyncio.sleep(0.5)
    operator.cancel()
    await asyncio.gather(operator, return_exceptions=True)
    lines = [line for line in process.stderr.read().splitlines() if line.strip()]
    return samples, process.returncode, lines[-1] if lines else ""


def trend(samples: list[tuple[int, float]], first: int) -> tuple[float, float, int]:
    """(slope, standard error) in MB per 100 frames of RSS over frames >= first; the number of samples."""
    points = np.array([(f, r) for f, r in samples if f >= first], dtype=float)
    if len(points) < 3:
        return float("nan"), float("nan"), len(points)
    x, y = points[:, 0], points[:, 1]
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (slope * x + intercept)
    stderr = np.sqrt(residuals.var(ddof=2) / ((x - x.mean()) ** 2).sum())
    return 100 * slope, 100 * stderr, len(points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="edgetam", help="model config (default %(default)s)")
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--size", type=int, default=512, choices=(512, 1024))
    parser.add_argument("--sequence", default="car-shadow")
    parser.add_argument("--warmup", type=int, default=50, help="frames before the trend is measured")
    parser.add_argument("--settled", type=int, default=200, help="frames before the settled trend is measured")
    parser.add_argument("--davis-root", type=Path, default=DEFAULT_DAVIS)
    parser.add_argument("--env", nargs="+", default=["default"], help="environment variants, one process each")
    parser.add_argument("--samples", type=Path, help="write every (frame, RSS MB) sample here as JSON")
    args = parser.parse_args()
    if args.frames < max(2 * args.warmup, args.settled + 100):
        parser.error("--frames must be at least twice --warmup and 100 more than --settled")

    load = os.getloadavg()[0]
    print(f"{platform.node()}: {cpu_line()}; load average {load:.2f} at start")
    print(
        f"{args.model} at {args.size} px, {args.frames} frames of {args.sequence} (854x480), vos track --out --mqtt; "
        "a click on object 1 every 10 frames, object 2 added and removed every 25"
    )
    print(f"{'variant':<40} {'rc':>3} {'RSS@warm':>9} {'RSS end':>8} {'MB/100 fr':>14} {'from ' + str(args.settled):>14}")
    everything = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frames, mask, weights = prepare(folder, args.davis_root, args.sequence, args.frames, args.model)
        broker = MosquittoBroker(folder / "broker")
        broker.start()
        try:
            for i, env_text in enumerate(args.env):
                start = time.monotonic()
                samples, rc, last = asyncio.run(
                    run_variant(env_text, frames, mask, weights, args.model, args.size, broker, folder / f"out{i}")
                )
                everything[env_text] = samples
                slope, err, _ = trend(samples, args.warmup)
                half, half_err, _ = trend(samples, args.settled)
                warm = next((r for f, r in samples if f >= args.warmup), float("nan"))
                end = samples[-1][1] if samples else float("nan")
                print(
                    f"{env_text:<40} {rc:>3} {warm:>9.0f} {end:>8.0f} {slope:>7.1f} ± {err:<4.1f} "
                    f"{half:>7.1f} ± {half_err:<4.1f}  ({len(samples)} samples, {time.monotonic() - start:.0f} s)"
                )
                if rc != 0:
                    print(f"    vos track: {last}")
        finally:
            broker.stop()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.samples is not None:
        args.samples.write_text(json.dumps(everything))


if __name__ == "__main__":
    main()
