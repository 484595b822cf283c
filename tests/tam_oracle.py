"""Running an efficient tracker's reference (tests/oracles/tam_reference.py) on a DAVIS clip, shared by the tests of
each family: the clip, the prompts (a mask and a click on frame 0, corrections on a later frame) and the outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vos
from tests.oracles.tam_reference import reference_env
from tests.video_reference import LOGIT_TOL, centroid_click, ground_truth, write_clip

REPO = Path(__file__).resolve().parents[1]
REFS = REPO / ".refs"
ORACLE = REPO / "tests" / "oracles" / "tam_reference.py"
SEQUENCE = "car-shadow"
FRAMES = 8
CORRECTION_FRAME = 5
INSTALLED = {"edgetam": ("edgetam/sam2", "timm/timm"), "efficienttam": ("efficienttam/sam2",)}


def require_reference(family: str) -> None:
    """Skip (fail on CI) when the family's reference is not installed in .refs/."""
    if not all((REFS / folder).is_dir() for folder in INSTALLED[family]):
        message = f"{family}'s reference is not installed in {REFS}: run scripts/install-dev.sh"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)


def native_clip(davis_root: Path, folder: Path) -> list[np.ndarray]:
    """The first FRAMES frames of the sequence as DAVIS has them (854 x 480 JPEGs), copied into `folder`."""
    frames = []
    for i in range(FRAMES):
        src = davis_root / "JPEGImages" / "480p" / SEQUENCE / f"{i:05d}.jpg"
        shutil.copy(src, folder / src.name)
        frames.append(np.array(Image.open(src).convert("RGB")))
    return frames


def native_mask(davis_root: Path, frame: int) -> np.ndarray:
    return np.array(Image.open(davis_root / "Annotations" / "480p" / SEQUENCE / f"{frame:05d}.png")) > 0


def run_reference(
    family: str, davis_root: Path, out: Path, size: int, config: str | None = None, native: bool = False
) -> dict:
    """The oracle's checkpoint and outputs, and the clip and prompts it tracked: S x S frames, or with `native` the
    854 x 480 frames as they are (the reference resizes them as it loads them, vos as it steps; the logits come
    back at 854 x 480).

    Both objects are corrected on the same frame: the references' video predictors (SAM 2's of July 2024) run all
    objects as one batch and make a corrected frame a conditioning frame of every object, where vos (as Meta's
    sam2 1.1.0) makes it one of the corrected object only; with a correction for each, both mean the same.
    """
    require_reference(family)
    frames_dir = out / "frames"
    frames_dir.mkdir()
    if native:
        frames, mask = native_clip(davis_root, frames_dir), native_mask(davis_root, 0)
        target = centroid_click(native_mask(davis_root, CORRECTION_FRAME)).tolist()
    else:
        frames = write_clip(davis_root, SEQUENCE, size, frames_dir, n=FRAMES)
        mask = ground_truth(davis_root, SEQUENCE, 0, size)
        target = centroid_click(ground_truth(davis_root, SEQUENCE, CORRECTION_FRAME, size)).tolist()
    np.save(out / "mask.npy", mask)
    height, width = mask.shape
    click = [[width * 0.2, height * 0.8]]
    corrections = {1: {"points": target, "labels": [1]}, 2: {"points": target + click, "labels": [1, 0]}}
    spec = {"family": family, "config": config, "out": str(out), "size": size, "seed": 0, "frames": str(frames_dir),
            "mask": str(out / "mask.npy"), "click": click, "correction_frame": CORRECTION_FRAME,
            "corrections": corrections}  # fmt: skip
    (out / "spec.json").write_text(json.dumps(spec))
    run = subprocess.run([sys.executable, str(ORACLE), str(out / "spec.json")], env=reference_env(REFS, family),
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    return {"checkpoint": out / f"{config or family}.pt", "outputs": dict(np.load(out / "reference.npz")),
            "frames": frames, "mask": mask, "click": np.array(click, np.float32),
            "corrections": corrections}  # fmt: skip


@torch.inference_mode()
def check_engine_features(model, reference: dict, tmp_path: Path, size: int) -> None:
    """`vos track` with the reference's checkpoint (its config found from the file), objects added and removed
    mid-stream and several at once, and an offline session propagating both ways."""
    from vos.cli import main

    frames = reference["frames"]
    tracker = vos.Tracker(model)
    tracker.add_prompt(1, mask=reference["mask"])
    tracker.add_prompt(2, points=reference["click"], labels=[1])
    seen = []
    for f, frame in enumerate(frames[:5]):
        if f == 2:
            tracker.add_prompt(3, box=(10, 10, 200, 200))
        if f == 3:
            tracker.remove_object(1)
        result = tracker.step(frame)
        seen.append(sorted(result.masks))
        assert all(result.masks[i].shape == frame.shape[:2] for i in result.masks)
    assert seen == [[1, 2], [1, 2], [1, 2, 3], [2, 3], [2, 3]]

    with vos.VideoSession(model, frames) as session:
        session.add_prompt(3, obj_id=1, mask=reference["mask"])
        forward = [r.frame_index for r in session.propagate(start=3)]
        backward = [r.frame_index for r in session.propagate(start=3, reverse=True)]
        assert forward == list(range(3, len(frames))) and backward == [3, 2, 1, 0]
        assert session.result(0).masks[1].any()

    out = tmp_path / "out"
    mask_png = tmp_path / "mask.png"
    Image.fromarray(reference["mask"].astype(np.uint8) * 255).save(mask_png)
    code = main(["track", str(Path(reference["checkpoint"]).parent / "frames"),
                 "--checkpoint", str(reference["checkpoint"]), "--image-size", str(size), "--mask", f"1={mask_png}",
                 "--max-frames", "3", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0 and sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]


def track_against(reference: dict, model, tol: float = LOGIT_TOL) -> float:
    """`vos.Tracker` on the reference's clip and prompts: every frame's logits within `tol` of the reference's (and
    the object scores, where the reference keeps them), both objects present; the worst logit difference."""
    ref = reference["outputs"]
    tracker = vos.Tracker(model, fill_hole_area=0)
    tracker.add_prompt(1, mask=reference["mask"])
    tracker.add_prompt(2, points=reference["click"], labels=[1])
    worst = 0.0
    for f, frame in enumerate(reference["frames"]):
        if f == CORRECTION_FRAME:
            for obj_id, clicks in reference["corrections"].items():
                tracker.add_prompt(obj_id, points=clicks["points"], labels=clicks["labels"])
        result = tracker.step(frame)
        logits, scores = ref[f"logits_{f}"], ref.get(f"scores_{f}")
        for k, obj_id in enumerate((1, 2)):
            worst = max(worst, float(np.abs(result.logits[obj_id] - logits[k]).max()))
            if scores is not None:
                assert abs(result.scores[obj_id] - scores[k]) <= tol, (f, obj_id, result.scores[obj_id], scores[k])
            assert 0 < (logits[k] > 0).sum() < logits[k].size, (f, obj_id)  # present: real logits, some pixels
            assert result.scores[obj_id] > 0 and 0 < result.masks[obj_id].sum() < result.masks[obj_id].size, (f, obj_id)
        assert worst <= tol, (f, worst)
    return worst
