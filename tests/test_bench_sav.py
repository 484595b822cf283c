"""`vos bench sav` on a small SA-V-layout set made from DAVIS frames: an object that shows later is prompted on
its first annotated frame, per-object PNGs are written for the annotated frames and scored; on Ray (`--workers`)
the PNGs and scores are the same."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ray_fixtures import ray_or_skip
from vos.cli import main
from vos.evaluation.metrics import jaccard
from vos.evaluation.sav import evaluate_sav

VIDEOS = {"car-a": 0, "car-b": 10}  # two videos cut from car-shadow (the sequence tests/data holds whole): first frame
FRAMES = 6
ANNOTATED = ("00000", "00002", "00004")
LATE_BOX = (40, 300, 260, 470)  # x0, y0, x1, y1 of car-b's second object, which shows from frame 2
IMAGE_SIZE = 512


@pytest.fixture(scope="module")
def sav_root(davis_root: Path, tmp_path_factory) -> Path:
    """sav_val-like: JPEGImages_24fps/<video>/00000..5.jpg, Annotations_6fps/<video>/<obj>/{0,2,4}.png (0/255)."""
    root = tmp_path_factory.mktemp("sav")
    source = davis_root / "JPEGImages" / "480p" / "car-shadow"
    for video, first in VIDEOS.items():
        frames = root / "JPEGImages_24fps" / video
        frames.mkdir(parents=True)
        for i in range(FRAMES):
            shutil.copy(source / f"{first + i:05d}.jpg", frames / f"{i:05d}.jpg")
        for frame in ANNOTATED:
            gt = np.asarray(Image.open(davis_root / "Annotations/480p/car-shadow" / f"{first + int(frame):05d}.png")) > 0
            masks = {"000": gt}
            if video == "car-b":
                late = np.zeros_like(gt)
                if frame != "00000":
                    x0, y0, x1, y1 = LATE_BOX
                    late[y0:y1, x0:x1] = True
                masks["001"] = late
            for obj, mask in masks.items():
                (root / "Annotations_6fps" / video / obj).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(root / "Annotations_6fps" / video / obj / f"{frame}.png")
    return root


def bench(sav_root: Path, out: Path, checkpoint: Path, *extra: str) -> str:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            ["bench", "sav", "--sav-root", str(sav_root), "--out", str(out), "--checkpoint", str(checkpoint),
             "--image-size", str(IMAGE_SIZE), "--threads", "2", "--eval-threads", "2", "--quiet", *extra]
        )  # fmt: skip
    assert code == 0
    return stdout.getvalue()


@pytest.fixture(scope="module")
def in_process(sav_root, tracking_checkpoint, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench-sav")
    return out, bench(sav_root, out, tracking_checkpoint)


def masks_of(out: Path) -> dict[str, np.ndarray]:
    """Per-object masks by `video/obj/frame.png` (not the Ray path's label maps under .labels/)."""
    return {str(p.relative_to(out)): np.asarray(Image.open(p)) for p in sorted(out.glob("[!.]*/*/*.png"))}


def test_per_object_masks_are_written_for_the_annotated_frames_and_scored(in_process, sav_root):
    out, stdout = in_process
    written = masks_of(out)
    expected = {f"{v}/000/{f}.png" for v in VIDEOS for f in ANNOTATED} | {f"car-b/001/{f}.png" for f in ANNOTATED}
    assert set(written) == expected
    assert all(set(np.unique(m)) <= {0, 255} for m in written.values())
    assert not written["car-b/001/00000.png"].any()  # not prompted yet: the object shows from frame 2
    prompt = np.asarray(Image.open(sav_root / "Annotations_6fps/car-b/001/00002.png")) > 0
    assert jaccard(prompt, written["car-b/001/00002.png"] > 0) >= 0.7  # prompted there: the tracker's take on the box
    assert written["car-b/001/00004.png"].any()  # and tracked on
    assert re.search(r"Tracked 12 frames of 2 sequence\(s\), 3 object\(s\)", stdout), stdout
    assert re.search(r"Tracker: [0-9.]+ frames/s", stdout)
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("sequence") and len(rows) == 2 + 3  # header, global, one row per object
    assert sum(bool(re.match(r"car-b\s*,001,", r)) for r in rows) == 1  # the late object is scored


def test_ray_workers_write_the_same_masks_and_scores(in_process, sav_root, tracking_checkpoint, tmp_path):
    ray_or_skip()
    reference, _ = in_process
    stdout = bench(sav_root, tmp_path, tracking_checkpoint, "--workers", "2")
    assert "on Ray, 2 worker(s)" in stdout
    ours, theirs = masks_of(tmp_path), masks_of(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    gt = sav_root / "Annotations_6fps"
    scores = lambda out: [(o.video, o.obj, o.frames, o.J, o.F) for o in evaluate_sav(gt, out, threads=2).objects]  # noqa: E731
    assert scores(tmp_path) == scores(reference)
