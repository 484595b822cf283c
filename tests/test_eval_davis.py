"""`vos eval davis`: the official OSVOS numbers on real DAVIS 2016 data, the statistics, and the errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data_paths import require_davis
from vos.cli import main
from vos.errors import VosError
from vos.evaluation.davis import GLOBAL_COLUMNS, decay_bin_edges, evaluate_davis, statistics
from vos.evaluation.metrics import score_frame

OSVOS_SEQUENCES = ["blackswan", "breakdance", "camel", "car-shadow", "dog", "drift-chicane", "libby"]
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def real_root() -> Path:
    return require_davis("Annotations/480p", "results/osvos", "results/osvos-official-scores.json")


@pytest.fixture(scope="module")
def official(real_root: Path) -> dict:
    return json.loads((real_root / "results/osvos-official-scores.json").read_text())


# --- real data: the official evaluator's numbers ---------------------------------------------------


def test_api_reproduces_the_official_osvos_scores(real_root: Path, official: dict):
    result = evaluate_davis(real_root, real_root / "results/osvos", threads=2)
    assert result.global_scores() == pytest.approx(official["global"], abs=TOLERANCE)
    per_sequence = {name: (j, f) for name, j, f in result.per_sequence()}
    assert list(per_sequence) == [f"{s}_1" for s in OSVOS_SEQUENCES]
    for name, expected in official["per_sequence"].items():
        assert per_sequence[name] == pytest.approx((expected["J-Mean"], expected["F-Mean"]), abs=TOLERANCE)
    assert result.missing == ("bmx-trees", "horsejump-high", "kite-surf")
    frames = {o.sequence: len(o.frames) for o in result.objects}
    assert frames["blackswan"] == 48 and frames["libby"] == 47


def test_cli_prints_and_writes_the_official_tables(real_root: Path, official: dict, tmp_path: Path, capsys):
    code = main(
        ["eval", "davis", "--davis-root", str(real_root), "--results", str(real_root / "results/osvos"),
         "--out", str(tmp_path), "--threads", "2", "--quiet"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "Global results for val" in out and "Total time:" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == list(GLOBAL_COLUMNS))
    printed = [float(v) for v in lines[header + 1].split()]
    assert printed == pytest.approx([official["global"][c] for c in GLOBAL_COLUMNS], abs=TOLERANCE)

    with open(tmp_path / "global_results-val.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(GLOBAL_COLUMNS)
    assert [float(v) for v in rows[1]] == pytest.approx([official["global"][c] for c in GLOBAL_COLUMNS], abs=TOLERANCE)
    with open(tmp_path / "per-sequence_results-val.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [r[0] for r in rows[1:]] == list(official["per_sequence"])
    for name, j, f in rows[1:]:
        expected = official["per_sequence"][name]
        assert (float(j), float(f)) == pytest.approx((expected["J-Mean"], expected["F-Mean"]), abs=TOLERANCE)


def test_strict_requires_results_for_every_sequence(real_root: Path, tmp_path: Path, capsys):
    args = ["eval", "davis", "--davis-root", str(real_root), "--results", str(real_root / "results/osvos")]
    assert main([*args, "--strict", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vos: error:") and "bmx-trees" in err
    assert main([*args, "--sequences", "camel,dog", "--strict", "--out", str(tmp_path), "-q"]) == 0
    with open(tmp_path / "per-sequence_results-val.csv") as fh:
        assert [r[0] for r in csv.reader(fh)][1:] == ["camel_1", "dog_1"]


# --- statistics ------------------------------------------------------------------------------------


def test_decay_bins_round_half_up_and_do_not_wrap_past_256_frames():
    assert decay_bin_edges(8).tolist() == [0, 2, 4, 5, 7]  # 4.5 rounds up, as in the toolkit
    assert decay_bin_edges(10).tolist() == [0, 2, 5, 7, 9]
    assert decay_bin_edges(298).tolist() == [0, 74, 149, 223, 297]  # the toolkit's uint8 gives 41 last


def test_statistics_mean_recall_decay():
    values = np.array([1.0, 0.9, 0.5, 0.6, 0.2, 0.3, 0.0, 0.1])
    stats = statistics(values)
    assert stats.mean == pytest.approx(values.mean())
    assert stats.recall == 3 / 8  # 0.5 itself is not above the threshold
    assert stats.decay == pytest.approx(np.mean(values[0:3]) - np.mean(values[5:8]))


# --- synthetic DAVIS roots -------------------------------------------------------------------------


def frame_name(i: int) -> str:
    return f"{i:05d}"


def save_labels(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [255, 255, 255] * 252)
    image.save(path)


def make_davis(root: Path, gt: dict[str, list[np.ndarray]], results: dict[str, list[np.ndarray]]) -> Path:
    for seq, frames in gt.items():
        for i, labels in enumerate(frames):
            save_labels(root / "Annotations/480p" / seq / f"{frame_name(i)}.png", labels)
            (root / "JPEGImages/480p" / seq).mkdir(parents=True, exist_ok=True)
            (root / "JPEGImages/480p" / seq / f"{frame_name(i)}.jpg").touch()
    for seq, frames in results.items():
        for i, labels in enumerate(frames):
            save_labels(root / "results" / seq / f"{frame_name(i)}.png", labels)
    return root


def two_objects(n_frames: int, shape=(24, 32), shift: int = 0) -> list[np.ndarray]:
    frames = []
    for i in range(n_frames):
        labels = np.zeros(shape, dtype=np.uint8)
        labels[2:10, 2 + (i + shift) % 5 : 12 + (i + shift) % 5] = 1
        labels[14:22, 18:28 - i % 3] = 2
        frames.append(labels)
    return frames


def test_palette_objects_void_and_image_set_order(tmp_path: Path):
    gt = two_objects(6)
    for labels in gt:
        labels[0, :] = 255  # void: background for every object, as in the toolkit
    results = {"b": two_objects(6, shift=1), "a": two_objects(6, shift=2)}
    root = make_davis(tmp_path, {"a": gt, "b": gt}, results)
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text("b\na\n")

    result = evaluate_davis(root, root / "results", threads=2)
    assert [o.name for o in result.objects] == ["b_1", "b_2", "a_1", "a_2"]
    for o in result.objects:
        expected = [
            score_frame(np.where(gt[i] == 255, 0, gt[i]), results[o.sequence][i], 2) for i in range(1, 5)
        ]
        assert o.j.tolist() == [s.j[o.object_id - 1] for s in expected]
        assert o.f.tolist() == [s.f[o.object_id - 1] for s in expected]


def test_long_sequence_statistics(tmp_path: Path):
    """300 frames (298 scored): J of frame i is a_i / 100 by construction, so Decay is known exactly."""
    n_frames, side = 300, 10
    shape = (16, 24)
    gt, pred, expected_j = [], [], []
    for i in range(n_frames):
        labels = np.zeros(shape, dtype=np.uint8)
        labels[3 : 3 + side, 5 : 5 + side] = 1
        covered = (i * 37) % (side * side + 1)
        guess = np.zeros(side * side, dtype=np.uint8)
        guess[:covered] = 1
        prediction = np.zeros(shape, dtype=np.uint8)
        prediction[3 : 3 + side, 5 : 5 + side] = guess.reshape(side, side)
        gt.append(labels)
        pred.append(prediction)
        expected_j.append(covered / (side * side))
    root = make_davis(tmp_path, {"long": gt}, {"long": pred})

    (obj,) = evaluate_davis(root, root / "results", threads=2).objects
    scored = np.array(expected_j[1:-1])
    assert obj.j.tolist() == pytest.approx(scored.tolist())
    stats = obj.j_stats
    assert stats.mean == pytest.approx(scored.mean())
    assert stats.recall == pytest.approx(np.mean(scored > 0.5))
    assert stats.decay == pytest.approx(scored[0:75].mean() - scored[223:298].mean())


# --- errors a user can act on ----------------------------------------------------------------------


def break_missing_frame(root: Path) -> None:
    (root / "results/s/00002.png").unlink()


def break_size(root: Path) -> None:
    save_labels(root / "results/s/00003.png", np.zeros((20, 30), dtype=np.uint8))


def break_object_id(root: Path) -> None:
    labels = two_objects(6)[1]
    labels[5, 5] = 3
    save_labels(root / "results/s/00001.png", labels)


def break_annotation(root: Path) -> None:
    (root / "Annotations/480p/s/00004.png").unlink()


def test_binary_annotations_take_255_as_the_object_and_reject_mixed_formats(tmp_path: Path):
    frames = [np.where(labels == 1, 255, 0).astype(np.uint8) for labels in two_objects(5)]
    pred = [np.where(labels == 255, 1, 0).astype(np.uint8) for labels in frames]
    root = make_davis(tmp_path, {"s": frames}, {"s": pred})
    (obj,) = evaluate_davis(root, root / "results", threads=2).objects
    assert obj.name == "s_1" and obj.j.tolist() == [1.0] * 3 and obj.f.tolist() == [1.0] * 3

    save_labels(root / "results/s/00002.png", frames[2])
    with pytest.raises(VosError, match="00002.png holds object id\\(s\\) 255 .* \\(255 is not an object id"):
        evaluate_davis(root, root / "results", threads=2)
    save_labels(root / "results/s/00002.png", pred[2])
    save_labels(root / "Annotations/480p/s/00003.png", two_objects(5)[3])
    with pytest.raises(VosError, match="00003.png holds value\\(s\\) \\[1, 2\\], but the first annotation"):
        evaluate_davis(root, root / "results", threads=2)


@pytest.mark.parametrize(
    "breaker, sequences, message",
    [
        (None, "s,nope", "sequence 'nope': no annotations"),
        (break_missing_frame, "s", "1 result frame\\(s\\) missing in .*00002.png"),
        (break_size, "s", "00003.png is 30x20 but its annotation .* is 32x24"),
        (break_object_id, "s", "00001.png holds object id\\(s\\) 3 but the first annotation of 's' has objects 1..2"),
        (break_annotation, "s", "1 frame\\(s\\) of .* have no annotation .*00004"),
    ],
)
def test_errors_are_clear(tmp_path: Path, capsys, breaker, sequences: str, message: str):
    root = make_davis(tmp_path, {"s": two_objects(6)}, {"s": two_objects(6)})
    if breaker:
        breaker(root)
    with pytest.raises(VosError, match=message):
        evaluate_davis(root, root / "results", sequences=sequences.split(","), threads=2)
    args = ["eval", "davis", "--davis-root", str(root), "--results", str(root / "results"), "--sequences", sequences]
    assert main([*args, "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith("vos: error: ")
