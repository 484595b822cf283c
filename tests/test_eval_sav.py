"""`vos eval sav`: SA-V layout and conventions, checked against the DAVIS path on the same masks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data_paths import require_davis
from vos.cli import main
from vos.errors import VosError
from vos.evaluation.davis import evaluate_davis
from vos.evaluation.metrics import read_mask, score_frame
from vos.evaluation.sav import SCORE_SCALE, evaluate_sav

SEQUENCES = ("blackswan", "car-shadow")
SPARSE_STEP = 4  # SA-V annotates at 6 fps: every 4th frame of a 24 fps video


def save_mask(path: Path, mask: np.ndarray, value: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, value, 0).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def real_root() -> Path:
    return require_davis("Annotations/480p", "results/osvos")


@pytest.fixture(scope="module")
def sav_fixture(real_root: Path, tmp_path_factory) -> Path:
    """GT_ROOT=gt, RESULTS=res: per video, object 000 on every frame and object 001 on every 4th."""
    out = tmp_path_factory.mktemp("sav")
    for seq in SEQUENCES:
        frames = sorted(p.stem for p in (real_root / "Annotations/480p" / seq).glob("*.png"))
        for obj, selected in (("000", frames), ("001", frames[::SPARSE_STEP])):
            for frame in selected:
                gt = read_mask(real_root / "Annotations/480p" / seq / f"{frame}.png") > 0
                pred = read_mask(real_root / "results/osvos" / seq / f"{frame}.png") > 0
                save_mask(out / "gt" / seq / obj / f"{frame}.png", gt)
                save_mask(out / "res" / seq / obj / f"{frame}.png", pred, value=1)
    return out


@pytest.fixture(scope="module")
def davis_objects(real_root: Path) -> dict:
    result = evaluate_davis(real_root, real_root / "results/osvos", sequences=list(SEQUENCES), threads=2)
    return {o.sequence: o for o in result.objects}


def test_scores_equal_the_davis_path_on_the_same_frames(sav_fixture: Path, davis_objects: dict):
    result = evaluate_sav(sav_fixture / "gt", sav_fixture / "res", threads=2)
    assert [(o.video, o.obj) for o in result.objects] == [(s, o) for s in SEQUENCES for o in ("000", "001")]
    for o in result.objects:
        davis = davis_objects[o.video]
        n_frames = len(davis.frames) + 2
        scored = range(1, n_frames - 1) if o.obj == "000" else range(0, n_frames, SPARSE_STEP)[1:-1]
        index = [i - 1 for i in scored]  # DAVIS scores start at frame 1
        assert o.frames == tuple(davis.frames[i] for i in index)
        assert o.J == pytest.approx(davis.j[index].mean() * SCORE_SCALE, abs=1e-9)
        assert o.F == pytest.approx(davis.f[index].mean() * SCORE_SCALE, abs=1e-9)
    assert result.J == pytest.approx(np.mean([o.J for o in result.objects]))
    assert result.JF == pytest.approx((result.J + result.F) / 2)


def test_keep_first_last_adds_the_end_frames(sav_fixture: Path, davis_objects: dict, real_root: Path):
    result = evaluate_sav(sav_fixture / "gt", sav_fixture / "res", skip_first_last=False, threads=2)
    o = next(o for o in result.objects if (o.video, o.obj) == ("car-shadow", "000"))
    davis = davis_objects["car-shadow"]
    ends = []
    for frame in ("00000", "00039"):
        gt = read_mask(real_root / "Annotations/480p/car-shadow" / f"{frame}.png") > 0
        pred = read_mask(real_root / "results/osvos/car-shadow" / f"{frame}.png") > 0
        ends.append(score_frame(gt, pred, 1))
    j = [ends[0].j[0], *davis.j, ends[1].j[0]]
    f = [ends[0].f[0], *davis.f, ends[1].f[0]]
    assert len(o.frames) == 40
    assert o.J == pytest.approx(np.mean(j) * SCORE_SCALE, abs=1e-9)
    assert o.F == pytest.approx(np.mean(f) * SCORE_SCALE, abs=1e-9)


def test_cli_writes_results_csv(sav_fixture: Path, tmp_path: Path, capsys):
    args = ["eval", "sav", "--gt-root", str(sav_fixture / "gt"), "--results", str(sav_fixture / "res")]
    assert main([*args, "--out", str(tmp_path), "--threads", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "Global score: J&F:" in out and "Total time:" in out
    expected = evaluate_sav(sav_fixture / "gt", sav_fixture / "res", threads=2)
    with open(tmp_path / "results.csv") as fh:
        rows = [[cell.strip() for cell in row] for row in csv.reader(fh)]
    assert rows[0] == ["sequence", "obj", "J&F", "J", "F"]
    assert rows[1][:2] == ["Global score", ""]
    assert [float(v) for v in rows[1][2:]] == pytest.approx([expected.JF, expected.J, expected.F], abs=0.051)
    assert [r[:2] for r in rows[2:]] == [[s, o] for s in SEQUENCES for o in ("000", "001")]
    for row, o in zip(rows[2:], expected.objects):
        assert [float(v) for v in row[2:]] == pytest.approx([o.JF, o.J, o.F], abs=0.051)


# --- conventions and errors on synthetic masks -----------------------------------------------------

SHAPE = (20, 30)


def box(present: bool) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[5:15, 8:20] = present
    return mask


def make_sav(root: Path, objects: dict[str, tuple[list[bool], list[bool]]], video: str = "v") -> None:
    for obj, (gt, pred) in objects.items():
        for i, (g, p) in enumerate(zip(gt, pred)):
            save_mask(root / "gt" / video / obj / f"{i:05d}.png", box(g))
            save_mask(root / "res" / video / obj / f"{i:05d}.png", box(p))


def test_frames_before_the_object_shows_up_do_not_count(tmp_path: Path):
    make_sav(
        tmp_path,
        {
            "000": ([False, False, False, True, True, True], [False, False, True, True, True, True]),
            "001": ([False] * 6, [True] * 6),
        },
    )
    result = evaluate_sav(tmp_path / "gt", tmp_path / "res", threads=2)
    (o,) = result.objects
    assert o.frames == ("00002", "00003", "00004")  # 00001 has neither mask; 00000 and 00005 are skipped
    assert o.J == pytest.approx(200 / 3)
    assert any("object 001" in note and "left out" in note for note in result.notes)


def test_missing_videos_are_skipped_unless_strict(tmp_path: Path):
    make_sav(tmp_path, {"000": ([True] * 4, [True] * 4)}, video="a")
    make_sav(tmp_path, {"000": ([True] * 4, [True] * 4)}, video="b")
    for path in sorted((tmp_path / "res/b").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "res/b").rmdir()
    result = evaluate_sav(tmp_path / "gt", tmp_path / "res", threads=2)
    assert result.missing == ("b",) and [o.video for o in result.objects] == ["a"]
    with pytest.raises(VosError, match="1 video\\(s\\) without results: b"):
        evaluate_sav(tmp_path / "gt", tmp_path / "res", strict=True)


def test_errors_are_clear(tmp_path: Path, capsys):
    make_sav(tmp_path, {"000": ([True] * 5, [True] * 5)})
    args = ["eval", "sav", "--gt-root", str(tmp_path / "gt"), "--results", str(tmp_path / "res"), "-q"]

    (tmp_path / "res/v/000/00002.png").unlink()
    with pytest.raises(VosError, match="object 000 of video 'v': 1 result frame\\(s\\) missing .*00002.png"):
        evaluate_sav(tmp_path / "gt", tmp_path / "res")
    assert main(args) == 1
    assert capsys.readouterr().err.startswith("vos: error: ")

    two = np.zeros(SHAPE, dtype=np.uint8)
    two[2:6, 2:6], two[10:14, 10:14] = 1, 2
    Image.fromarray(two).save(tmp_path / "res/v/000/00002.png")
    with pytest.raises(VosError, match="00002.png holds values \\[0, 1, 2\\]: SA-V expects one object mask per PNG"):
        evaluate_sav(tmp_path / "gt", tmp_path / "res")

    save_mask(tmp_path / "gt/w/00000.png", box(True))
    (tmp_path / "res/w").mkdir()
    with pytest.raises(VosError, match="holds PNGs directly"):
        evaluate_sav(tmp_path / "gt", tmp_path / "res")
