"""`vos batch` on a real local Ray: results identical to `vos track`, a killed worker's video retried, reruns resume."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import vos.cli
from tests.mqtt_broker import free_port
from tests.ray_fixtures import ray_or_skip, ray_pids
from vos.streams.label_map import read_label_map

VIDEOS = ("blackswan", "camel", "car-shadow")
MAX_FRAMES = 4


def scrape_metrics(port: int, scrapes: list[dict[str, float]], done: threading.Event) -> None:
    """Scrapes /metrics every 0.3 s until `done`: each scrape as {series: value}."""
    while not done.wait(0.3):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:  # not up yet, or already down
            continue
        scrapes.append({k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("vos_batch"))})


def kill_a_worker_mid_video(out: Path, killed: list[int], timeout: float = 120) -> None:
    """Once a video has some frames written, SIGKILL the worker tracking it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not killed:
        if any(list(p.glob("*.png")) for p in out.glob(".*.partial-*")) and (pids := ray_pids("ray::TrackWorker.track")):
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        time.sleep(0.05)


def same_results(a: Path, b: Path) -> None:
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for png in a.glob("*.png"):
        np.testing.assert_array_equal(read_label_map(png), read_label_map(b / png.name), err_msg=str(png))
    assert (a / "masks.jsonl").read_text() == (b / "masks.jsonl").read_text()


def test_batch_on_ray_equals_track_survives_a_killed_worker_and_resumes(davis_root, tracking_checkpoint, tmp_path, capsys):
    ray_or_skip()
    from vos.config import ModelSettings, TrackerConfig
    from vos.distributed.batch import jobs_from_inputs, run_batch
    from vos.engine.metrics import MetricsSettings
    from vos.engine.settings import RaySettings

    frames = {name: davis_root / "JPEGImages" / "480p" / name for name in VIDEOS}
    annotations = davis_root / "Annotations" / "480p"
    model = ["--checkpoint", str(tracking_checkpoint), "--image-size", "512", "--threads", "1"]
    reference = tmp_path / "track"
    for name, folder in frames.items():  # single-process `vos track`, one thread as each batch worker has
        args = ["track", str(folder), "--mask", f"1={annotations / name / '00000.png'}", "--out", str(reference / name)]
        assert vos.cli.main([*args, *model, "--max-frames", str(MAX_FRAMES), "--quiet"]) == 0

    out = tmp_path / "batch"
    jobs = jobs_from_inputs(list(frames.values()), annotations=annotations)
    settings = ModelSettings(checkpoint=tracking_checkpoint, image_size=512)
    killed: list[int] = []
    killer = threading.Thread(target=kill_a_worker_mid_video, args=(out, killed), daemon=True)
    killer.start()
    port, scrapes, done = free_port(), [], threading.Event()
    scraper = threading.Thread(target=scrape_metrics, args=(port, scrapes, done), daemon=True)
    scraper.start()
    try:
        ray = RaySettings(workers=2, num_cpus=1)
        summary = run_batch(jobs, out, settings, TrackerConfig(), ray, max_frames=MAX_FRAMES, metrics=MetricsSettings(port=port))
    finally:
        done.set()
    killer.join()
    scraper.join()

    assert killed, "no worker was killed: the test proved nothing about retries"
    assert sorted(summary.done) == sorted(VIDEOS) and summary.failed == {} and summary.retried >= 1
    assert summary.frames == len(list(reference.glob("*/*.png")))
    for name in VIDEOS:
        same_results(out / name, reference / name)
    assert not list(out.glob(".*.partial-*"))  # the killed attempt's partial folder is not left as a result
    videos_done = [s['vos_batch_videos_total{state="done"}'] for s in scrapes]
    frames_done = [s["vos_batch_frames_processed_total"] for s in scrapes]
    assert videos_done[0] < videos_done[-1] and videos_done == sorted(videos_done), videos_done  # /metrics moved
    assert frames_done == sorted(frames_done) and 0 < frames_done[-1] <= summary.frames
    assert max(s["vos_batch_retries_total"] for s in scrapes) <= summary.retried

    # A rerun finds every video complete: nothing is tracked, Ray is not even started.
    capsys.readouterr()
    assert vos.cli.main(["batch", *map(str, frames.values()), "--annotations", str(annotations), "--out", str(out), *model[:4], "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "0 videos done" in err and "3 already complete, skipped" in err


def test_bad_batch_inputs_are_clear_errors(davis_root, tmp_path, capsys):
    annotations = davis_root / "Annotations" / "480p"
    folder = davis_root / "JPEGImages" / "480p" / "blackswan"
    cases = [
        ([str(folder)], "--prompts FILE (JSON), or --discover"),
        ([str(tmp_path / "none.mp4"), "--annotations", str(annotations)], "no such video file or folder of frames"),
        ([str(folder), "--annotations", str(tmp_path)], "no annotation for"),
        ([str(folder), str(folder), "--annotations", str(annotations)], "two videos are named 'blackswan'"),
        ([str(folder), "--annotations", str(annotations), "--workers", "0"], "--workers: Input should be greater than or equal to 1"),
        ([str(folder), "--prompts", str(tmp_path / "none.json")], "cannot read the prompts file"),
    ]
    for args, message in cases:
        assert vos.cli.main(["batch", *args, "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    for old, new in (("--cpus-per-worker", "--num-cpus"), ("--num-gpus-per-worker", "--num-gpus")):  # renamed: RaySettings
        with pytest.raises(SystemExit) as exit_info:
            vos.cli.main(["batch", str(folder), "--annotations", str(annotations), old, "1", "--out", str(tmp_path)])
        assert exit_info.value.code == 2 and f"{old} is now {new}" in capsys.readouterr().err
