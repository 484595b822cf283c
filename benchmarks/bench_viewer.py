"""Does the live viewer slow tracking? The engine's frames/s with the web viewer open in Chromium vs without it.

Same model (sam2.1_hiera_t, random weights with objects kept present), same clip (DAVIS car-shadow
frames at 854x480 as H.264), same prompts; the two settings alternate run by run (`--rounds` of each)
so machine noise hits both alike. "With": `Engine(..., web=...)` and a headless Chromium (Debian's,
driven by Playwright) showing the stream, so every frame is drawn, JPEG-encoded, sent and decoded.
The page is opened and left to settle (`--settle` s: Chromium's start-up work) before the run starts;
the CPU seconds Chromium and its driver spend during the run are printed (with psutil installed), so
the viewer's share and the browser's share of any slow-down can be told apart. Also prints the
viewer's own drawing + JPEG cost per frame.

    python benchmarks/bench_viewer.py [--frames 16] [--rounds 2] [--objects 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import vos  # noqa: E402
from tests.conftest import (  # noqa: E402
    DEFAULT_DAVIS,
    OBJECT_SCORE_BIAS_OFFSET,
    build_meta,
    read_frame,
)
from tests.video_reference import write_video  # noqa: E402
from vos.engine import Engine, EngineConfig, StreamSettings  # noqa: E402
from vos.viewer import WebSettings  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
BOXES = [[300, 100, 650, 300], [0, 0, 250, 200], [600, 300, 850, 470], [0, 300, 250, 470]]


def browser_cpu_seconds() -> float | None:
    """CPU seconds used so far by this process's children (the Playwright driver and Chromium); None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


async def run_once(model, clip: Path, n_objects: int, frames: int, web: bool, settle: float) -> tuple[float, int, float | None, float]:
    """(frames/s of the stream, pictures the page received, browser CPU seconds during the run, run seconds)."""
    prompts = [{"obj_id": i + 1, "box": BOXES[i]} for i in range(n_objects)]
    stream = StreamSettings(source=str(clip), id="cam", max_frames=frames, prompts=prompts)
    settings = WebSettings(port=0) if web else None
    async with Engine(EngineConfig(streams=[stream], web=settings), model) as engine:
        if not web:
            [report] = await engine.run()
            return report.fps, 0, None, report.seconds
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page()
            await page.goto(engine.viewer.url)
            await page.wait_for_function("document.querySelector('#streams tbody tr') !== null")
            await asyncio.sleep(settle)
            before = browser_cpu_seconds()
            [report] = await engine.run()
            after = browser_cpu_seconds()
            pictures = await page.evaluate("window.vosViewer.pictures")
            await browser.close()
        return report.fps, pictures, None if before is None else after - before, report.seconds


def drawing_cost(davis: Path, repeats: int = 20) -> float:
    """Milliseconds to draw and JPEG-encode one 854x480 overlay with two objects (what the viewer adds per frame)."""
    from tests.test_viewer import fake_runner, frame_and_masks
    from vos.streams.overlay import OverlayStyle
    from vos.viewer.server import StreamView

    view = StreamView(fake_runner(), WebSettings(), OverlayStyle())
    frame, message, labels = frame_and_masks(read_frame(davis, "car-shadow", 0))
    view._draw(frame, message, labels)
    start = time.perf_counter()
    for _ in range(repeats):
        view._draw(frame, message, labels)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--objects", type=int, default=2, choices=range(1, len(BOXES) + 1))
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between opening the page and the run")
    parser.add_argument("--davis-root", type=Path, default=DEFAULT_DAVIS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_video(clip, [read_frame(args.davis_root, "car-shadow", i % 16) for i in range(args.frames)])
        meta = build_meta("sam2.1_hiera_t", 512)
        sd = meta.state_dict()
        sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += OBJECT_SCORE_BIAS_OFFSET
        checkpoint = Path(tmp) / "sam2.1_hiera_tiny.pt"
        torch.save({"model": sd}, checkpoint)
        model = vos.load_model(checkpoint=checkpoint, image_size=512)
        fps: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.rounds):
            for web in (False, True) if r % 2 == 0 else (True, False):
                rate, pictures, cpu, seconds = asyncio.run(run_once(model, clip, args.objects, args.frames, web, args.settle))
                fps[web].append(rate)
                browser = "" if cpu is None else f", Chromium + driver used {cpu:.1f} CPU-s of the run's {seconds:.1f} s"
                print(f"round {r}: {'with viewer' if web else 'no viewer  '} {rate:.3f} frames/s"
                      + (f", {pictures} pictures reached the page{browser}" if web else ""))
    without, with_web = statistics.median(fps[False]), statistics.median(fps[True])
    print(f"\n{args.frames} frames, {args.objects} objects, 512 px, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"frames/s without viewer {without:.3f}, with the page open {with_web:.3f}: ratio {with_web / without:.3f}")
    print(f"viewer drawing + JPEG per frame (854x480, 2 objects): {drawing_cost(args.davis_root):.1f} ms")


if __name__ == "__main__":
    main()
