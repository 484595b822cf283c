"""`vos bench davis`: the DAVIS loop (tracker, palette PNGs, J&F) end to end, and its errors.

The loop runs once per module, at 512 px on the first 3 frames of 4 of the 10 DAVIS 2016 sequences in tests/data
(`--sequences`; every sequence by default, `prepare_sequences`), with random weights (scores are meaningless; the
loop, the files and the tables are what is checked).
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vos
from tests.data_paths import require_davis
from vos.cli import main
from vos.errors import VosError
from vos.evaluation.bench import BenchError, prepare_sequence, prepare_sequences
from vos.evaluation.davis import GLOBAL_COLUMNS, PER_SEQUENCE_COLUMNS, evaluate_davis
from vos.evaluation.metrics import jaccard
from vos.streams.label_map import davis_palette, merge_masks

SEQUENCES = ["blackswan", "car-shadow", "drift-chicane", "kite-surf"]
MAX_FRAMES = 3
IMAGE_SIZE = 512
FIRST_FRAME_MIN_J = 0.7
"""The first frame's output is the prompt mask seen at the model's S/4 mask resolution (128 px at 512),
upsampled again: close to the annotation, not equal (thin parts such as kite-surf's lines suffer most)."""


@pytest.fixture(scope="module")
def bench_run(davis_root: Path, tracking_checkpoint: Path, tmp_path_factory) -> tuple[int, str, str, Path]:
    """(exit code, stdout, stderr, out dir) of one `vos bench davis` run."""
    out = tmp_path_factory.mktemp("bench") / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            ["bench", "davis", "--davis-root", str(davis_root), "--checkpoint", str(tracking_checkpoint),
             "--image-size", str(IMAGE_SIZE), "--max-frames", str(MAX_FRAMES), "--out", str(out), "--eval-threads", "2",
             "--sequences", ",".join(SEQUENCES)]
        )  # fmt: skip
    return code, stdout.getvalue(), stderr.getvalue(), out


def test_loop_writes_a_palette_png_per_frame(bench_run, davis_root: Path):
    code, _, err, out = bench_run
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == SEQUENCES
    for seq in SEQUENCES:
        pngs = sorted(p.name for p in (out / seq).glob("*.png"))
        assert pngs == [f"{i:05d}.png" for i in range(MAX_FRAMES)]
        gt_size = Image.open(davis_root / "Annotations/480p" / seq / "00000.png").size
        for name in pngs:
            with Image.open(out / seq / name) as image:
                assert image.mode == "P" and image.size == gt_size
                assert image.getpalette()[:6] == davis_palette()[:6] == [0, 0, 0, 128, 0, 0]
                assert set(np.unique(np.asarray(image)).tolist()) <= {0, 1}


def test_first_frame_is_the_prompt_as_the_tracker_returns_it(bench_run, davis_root: Path, tracking_checkpoint: Path):
    """Frame 0 is not a copy of the annotation: it is the tracker's output for the mask prompt."""
    _, _, _, out = bench_run
    for seq in SEQUENCES:
        gt = np.asarray(Image.open(davis_root / "Annotations/480p" / seq / "00000.png")) == 255
        written = np.asarray(Image.open(out / seq / "00000.png")) == 1
        assert jaccard(gt, written) >= FIRST_FRAME_MIN_J, seq
    # exactly what vos.Tracker returns on the prompted frame (one sequence suffices: one step)
    seq = "drift-chicane"
    gt = np.asarray(Image.open(davis_root / "Annotations/480p" / seq / "00000.png")) == 255
    frame = np.array(Image.open(davis_root / "JPEGImages/480p" / seq / "00000.jpg").convert("RGB"))
    tracker = vos.Tracker(vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=IMAGE_SIZE))
    tracker.add_prompt(1, mask=gt)
    expected = tracker.step(frame).masks[1]
    np.testing.assert_array_equal(np.asarray(Image.open(out / seq / "00000.png")) == 1, expected)
    assert not np.array_equal(expected, gt)


def test_loop_prints_and_writes_the_official_tables(bench_run):
    _, stdout, _, out = bench_run
    assert "Global results for val" in stdout and "Per sequence results for val" in stdout
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == list(GLOBAL_COLUMNS))
    assert len(lines[header + 1].split()) == len(GLOBAL_COLUMNS)
    assert re.search(rf"Tracked {len(SEQUENCES) * MAX_FRAMES} frames of {len(SEQUENCES)} sequence\(s\), "
                     rf"{len(SEQUENCES)} object\(s\)", stdout)  # fmt: skip
    assert re.search(r"Tracker: [0-9.]+ frames/s", stdout) and re.search(r"Whole loop: [0-9.]+ frames/s", stdout)

    with open(out / "global_results-val.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(GLOBAL_COLUMNS) and len(rows) == 2
    assert all(0 <= float(v) <= 1 for v in rows[1][:2])
    with open(out / "per-sequence_results-val.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(PER_SEQUENCE_COLUMNS)
    assert [r[0] for r in rows[1:]] == [f"{s}_1" for s in SEQUENCES]


def test_loop_scores_only_the_tracked_frames(bench_run, davis_root: Path):
    """With --max-frames 3 a sequence ends after frame 2, so frame 1 alone is scored."""
    _, _, _, out = bench_run
    result = evaluate_davis(davis_root, out, max_frames=MAX_FRAMES, threads=2)
    assert [o.frames for o in result.objects] == [("00001",)] * len(SEQUENCES)
    with pytest.raises(VosError, match="result frame\\(s\\) missing .*00003.png"):  # frames 1..3 of 5
        evaluate_davis(davis_root, out, max_frames=MAX_FRAMES + 2, threads=2)


def test_ray_workers_write_the_same_pngs_and_scores(bench_run, davis_root: Path, tracking_checkpoint: Path, tmp_path):
    """`--workers 2`: the sequences tracked on `vos batch`'s Ray pool, with the thread count of the in-process
    run (2), give the same PNGs and the same scores."""
    from tests.ray_fixtures import ray_or_skip

    ray_or_skip()
    _, _, _, reference = bench_run
    sequences = SEQUENCES[:2]
    out = tmp_path / "ray"
    (out / sequences[0]).mkdir(parents=True)
    (out / sequences[0] / "00000.png").write_bytes(b"stale")  # a folder of an earlier run is replaced
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            ["bench", "davis", "--davis-root", str(davis_root), "--checkpoint", str(tracking_checkpoint), "--quiet",
             "--image-size", str(IMAGE_SIZE), "--max-frames", str(MAX_FRAMES), "--out", str(out), "--threads", "2",
             "--sequences", ",".join(sequences), "--workers", "2", "--eval-threads", "2"]
        )  # fmt: skip
    assert code == 0
    assert re.search(rf"Tracked {len(sequences) * MAX_FRAMES} frames of {len(sequences)} sequence\(s\), 2 object\(s\) on Ray, 2 worker", stdout.getvalue())
    for seq in sequences:
        names = sorted(p.name for p in (out / seq).glob("*.png"))
        assert names == [f"{i:05d}.png" for i in range(MAX_FRAMES)], seq
        for name in names:
            np.testing.assert_array_equal(np.asarray(Image.open(out / seq / name)), np.asarray(Image.open(reference / seq / name)))
    ours = evaluate_davis(davis_root, out, sequences=sequences, max_frames=MAX_FRAMES, threads=2)
    theirs = evaluate_davis(davis_root, reference, sequences=sequences, max_frames=MAX_FRAMES, threads=2)
    assert ours.global_scores() == theirs.global_scores()


# --- no model needed ---------------------------------------------------------------------------------


def test_evaluator_max_frames_cuts_sequences(davis_root: Path):
    results = require_davis("results/osvos") / "results/osvos"
    result = evaluate_davis(davis_root, results, sequences=["camel"], max_frames=5, threads=2)
    assert result.objects[0].frames == ("00001", "00002", "00003")
    with pytest.raises(VosError, match="needs at least 3"):
        evaluate_davis(davis_root, results, max_frames=2)


def test_overlapping_masks_go_to_the_highest_logit():
    logits = {
        1: np.array([[5.0, 1.0, -1.0, -2.0]], dtype=np.float32),
        3: np.array([[2.0, 4.0, 3.0, -1.0]], dtype=np.float32),
    }
    masks = {k: v > 0 for k, v in logits.items()}
    np.testing.assert_array_equal(merge_masks(masks, logits, (1, 4)), [[1, 3, 3, 0]])
    # a mask that is off never wins, whatever its logit
    masks[1] = np.array([[False, True, False, False]])
    np.testing.assert_array_equal(merge_masks(masks, logits, (1, 4)), [[3, 3, 3, 0]])
    assert merge_masks({}, {}, (2, 3)).tolist() == [[0, 0, 0]] * 2
    # a mask that is on is labelled whatever its logit; equal logits go to the object listed first
    low = {2: np.full((1, 3), -np.inf, dtype=np.float32), 5: np.array([[-np.inf, 0.0, 7.0]], dtype=np.float32)}
    on = {2: np.array([[True, True, True]]), 5: np.array([[True, False, True]])}
    np.testing.assert_array_equal(merge_masks(on, low, (1, 3)), [[2, 2, 5]])
    np.testing.assert_array_equal(merge_masks({4: on[5]}, {4: low[5]}, (1, 3)), [[4, 0, 4]])


def test_palette_annotations_prompt_every_object(tmp_path: Path):
    labels = np.zeros((8, 10), dtype=np.uint8)
    labels[1:3, 1:3], labels[4:7, 5:9], labels[0, 9] = 1, 2, 255  # 255: void, not an object
    root = _fake_davis(tmp_path, labels)
    seq = prepare_sequence(root, "s", max_frames=3)
    assert seq.frames == ("00000", "00001", "00002")
    assert sorted(seq.prompts) == [1, 2]
    np.testing.assert_array_equal(seq.prompts[2], labels == 2)
    assert seq.image("00001").shape == (8, 10, 3)


def _fake_davis(root: Path, first: np.ndarray, n_frames: int = 4, name: str = "s") -> Path:
    (root / "Annotations/480p" / name).mkdir(parents=True)
    (root / "JPEGImages/480p" / name).mkdir(parents=True)
    for i in range(n_frames):
        image = Image.fromarray(first)
        image.putpalette(davis_palette())
        image.save(root / "Annotations/480p" / name / f"{i:05d}.png")
        Image.new("RGB", first.shape[::-1]).save(root / "JPEGImages/480p" / name / f"{i:05d}.jpg")
    return root


def _break_images(root: Path) -> None:
    (root / "JPEGImages/480p/s/00002.jpg").unlink()
    (root / "Annotations/480p/s/00002.png").unlink()
    (root / "JPEGImages/480p/s/00001.jpg").unlink()


@pytest.mark.parametrize(
    "args, breaker, message",
    [
        (["--davis-root", "{tmp}/nowhere"], None, "DAVIS root .*nowhere not found"),
        (["--sequences", "s,nope"], None, "1 sequence\\(s\\) not found in .*Annotations/480p: nope"),
        ([], lambda root: (root / "Annotations/480p/s/00000.png").unlink(), "frame\\(s\\) of .* have no annotation .*00000"),
        ([], _break_images, "1 annotated frame\\(s\\) have no image in .*00001.jpg"),
    ],
)
def test_errors_are_clear(tmp_path: Path, capsys, args: list[str], breaker, message: str):
    labels = np.zeros((8, 10), dtype=np.uint8)
    labels[2:5, 2:5] = 1
    root = _fake_davis(tmp_path / "davis", labels)
    if breaker:
        breaker(root)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--davis-root" not in args:
        args = ["--davis-root", str(root), *args]
    # the data is checked before the model is built: no checkpoint is read
    code = main(["bench", "davis", *args, "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("vos: error: ") and re.search(message, err), err


def test_errors_are_vos_errors(tmp_path: Path):
    with pytest.raises(BenchError, match="not found"):
        prepare_sequences(tmp_path / "nowhere")
    assert issubclass(BenchError, VosError)


def test_max_frames_below_three_is_refused(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "davis", "--davis-root", str(tmp_path), "--out", str(tmp_path), "--max-frames", "2"])
    assert exit_info.value.code == 2
    assert "must be at least 3" in capsys.readouterr().err


def test_checkpoint_of_another_config_is_refused(davis_root: Path, tracking_checkpoint: Path, tmp_path: Path, capsys):
    code = main(["bench", "davis", "--davis-root", str(davis_root), "--sequences", "car-shadow",
                 "--config", "sam2_hiera_t", "--checkpoint", str(tracking_checkpoint), "--image-size", "512",
                 "--out", str(tmp_path), "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == vos.CheckpointError.exit_code
    assert err.startswith("vos: error: ") and "this looks like sam2.1_hiera_t, not sam2_hiera_t" in err
    assert not (tmp_path / "car-shadow").exists()


class _Loaded(Exception):
    """Raised by the stand-in tracking loop with the name of the model it was given."""


def test_checkpoint_picks_its_config_without_config(davis_root: Path, tmp_path: Path, monkeypatch):
    """`vos bench davis --checkpoint` of a non-tiny model and no --config builds the model the checkpoint fits (the
    flag comes from ModelSettings, as in `vos track`), not the default tiny one."""
    import torch

    import vos.evaluation.bench

    path = tmp_path / "sam2.1_hiera_small.pt"
    torch.save({"model": vos.build_model("sam2.1_hiera_s", image_size=IMAGE_SIZE).state_dict()}, path)

    def track(loaded, *args, **kwargs):
        raise _Loaded(loaded.cfg.name)

    monkeypatch.setattr(vos.evaluation.bench, "track_sequences", track)
    with pytest.raises(_Loaded, match="^sam2.1_hiera_s$"):
        main(["bench", "davis", "--davis-root", str(davis_root), "--sequences", "car-shadow", "--checkpoint", str(path),
              "--image-size", str(IMAGE_SIZE), "--out", str(tmp_path / "out"), "-q"])  # fmt: skip


@pytest.mark.parametrize("old, new", [("--eval-workers", "--eval-threads")])
def test_renamed_flags_name_the_new_spelling(tmp_path: Path, capsys, old: str, new: str):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "davis", "--davis-root", str(tmp_path), "--out", str(tmp_path), old, "2"])
    assert exit_info.value.code == 2 and f"{old} is now {new}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "davis", "--davis-root", str(tmp_path), "--results", str(tmp_path), "--workers", "2"])
    assert exit_info.value.code == 2 and "--workers is now --threads" in capsys.readouterr().err
