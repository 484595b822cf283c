"""Overlay rendering: `draw_overlay` pixels, the H.264 overlay sink, `vos render` and `vos track --render`."""

from __future__ import annotations

import asyncio
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import vos.cli
from tests.conftest import read_frame
from tests.video_reference import write_video
from vos.cli.render import render_results
from vos.streams.label_map import read_label_map, write_label_map
from vos.streams.messages import MaskMessage, ObjectMask
from vos.streams.overlay import OverlayStyle, draw_overlay, object_colour
from vos.streams.sinks.video import H264Writer, OverlayVideoSink
from vos.streams.sources.base import Frame

SEQUENCE = "car-shadow"
RED, GREEN = (128, 0, 0), (0, 128, 0)  # DAVIS palette entries 1 and 2, written out independently of the code
PLAIN = OverlayStyle(captions=False, frame_info=False)
FPS = 24


def labels_of(davis_root: Path, index: int) -> np.ndarray:
    """(H, W) uint8: object 1 the car (DAVIS annotation), object 2 a box on the road below it."""
    labels = (read_label_map(davis_root / "Annotations" / "480p" / SEQUENCE / f"{index:05d}.png") > 0).astype(np.uint8)
    labels[320:440, 40:300][labels[320:440, 40:300] == 0] = 2
    return labels


def interior(labels: np.ndarray, obj_id: int, margin: int = 6) -> np.ndarray:
    """The object's pixels at least `margin` px inside its outline (away from the drawn contour)."""
    mask = (labels == obj_id).astype(np.uint8)
    return cv2.erode(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0


def blended(image: np.ndarray, colour: tuple[int, int, int], alpha: float) -> np.ndarray:
    return image.astype(np.float64) * (1 - alpha) + np.array(colour, dtype=np.float64) * alpha


def fill_matches(out: np.ndarray, image: np.ndarray, where: np.ndarray, colour: tuple[int, int, int], alpha: float) -> bool:
    """Every pixel of `where` in `out` is `image` blended with `colour` (to +-1)."""
    return bool(np.all(np.abs(out[where].astype(np.float64) - blended(image, colour, alpha)[where]) <= 1.0))


@pytest.fixture(scope="module")
def frame0(davis_root) -> tuple[np.ndarray, np.ndarray]:
    return read_frame(davis_root, SEQUENCE, 0), labels_of(davis_root, 0)


def test_fill_is_the_alpha_blend_and_the_background_is_untouched(frame0):
    image, labels = frame0
    out = draw_overlay(image, labels, {1: 3.2, 2: -0.5}, PLAIN, frame_index=0)
    assert out.shape == image.shape and out.dtype == np.uint8
    for obj_id, colour in ((1, RED), (2, GREEN)):
        inside = interior(labels, obj_id)
        assert inside.sum() > 1000
        assert fill_matches(out, image, inside, colour, PLAIN.alpha)
        band = (labels == obj_id) & ~inside
        is_contour = np.all(out == colour, axis=-1)
        assert is_contour[band].sum() > 100  # the outline, in the object's own colour, inside its mask
    np.testing.assert_array_equal(out[labels == 0], image[labels == 0])


def test_the_fill_check_fails_for_a_wrong_colour(frame0):
    image, labels = frame0
    out = draw_overlay(image, labels, style=PLAIN)
    assert fill_matches(out, image, interior(labels, 1), RED, PLAIN.alpha)
    assert not fill_matches(out, image, interior(labels, 1), GREEN, PLAIN.alpha)
    assert not fill_matches(out, image, interior(labels, 1), RED, 0.4)
    assert not np.array_equal(out[labels > 0], image[labels > 0])


def test_captions_and_frame_info_are_drawn_near_their_place(frame0):
    image, labels = frame0
    plain = draw_overlay(image, labels, {1: 3.2, 2: -0.5}, PLAIN)
    captioned = draw_overlay(image, labels, {1: 3.2, 2: -0.5}, OverlayStyle(frame_info=False))
    changed = np.any(captioned != plain, axis=-1)
    assert changed.sum() > 200
    near = np.zeros_like(changed)
    for obj_id in (1, 2):
        x, y, _, _ = cv2.boundingRect((labels == obj_id).astype(np.uint8))
        near[max(y - 30, 0) : y + 10, x : x + 120] = True
        assert changed[max(y - 30, 0) : y + 10, x : x + 120].any()
    assert not changed[~near].any()
    info = draw_overlay(image, labels, style=OverlayStyle(captions=False), frame_index=7, fps=12.5)
    changed = np.any(info != plain, axis=-1)
    assert changed[:40, :200].any() and not changed[40:].any()


def test_a_caption_in_the_corner_goes_below_the_frame_info(frame0):
    """An object at the top-left: its caption is drawn just below the frame-info box, not hidden under it."""
    image, _ = frame0
    labels = np.zeros(image.shape[:2], np.uint8)
    labels[5:120, 5:200] = 3
    style = OverlayStyle(alpha=0.0, contour=0)
    info_only = draw_overlay(image, labels, {3: 1.0}, style.model_copy(update={"captions": False}), frame_index=7)
    both = draw_overlay(image, labels, {3: 1.0}, style, frame_index=7)
    info_rows = np.flatnonzero(np.any(info_only != image, axis=(1, 2)))
    caption = np.any(both != info_only, axis=-1)
    assert caption.any() and np.flatnonzero(caption.any(axis=1)).min() > info_rows.max()
    assert np.array_equal(both[: info_rows.max() + 1], info_only[: info_rows.max() + 1])  # the info box is intact
    assert np.all(both[caption] == object_colour(3), axis=-1).any()


def message_of(index: int, labels: np.ndarray, scores: dict[int, float]) -> MaskMessage:
    h, w = labels.shape
    objects = [ObjectMask.from_mask(i, labels == i, s) for i, s in scores.items()]
    return MaskMessage(stream="s", frame_index=index, pts=None, width=w, height=h, objects=objects)


def decode(path: Path) -> tuple[av.VideoStream, list[tuple[float, np.ndarray]]]:
    """The stream's rate and every frame as (seconds, RGB image)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        return stream.average_rate, frames


def test_overlay_video_sink_keeps_timing_size_and_colours(davis_root, tmp_path):
    images = [read_frame(davis_root, SEQUENCE, i) for i in range(5)]
    labels = [labels_of(davis_root, i) for i in range(5)]
    path = tmp_path / "sub" / "overlay.mp4"

    async def main():
        async with OverlayVideoSink(path, PLAIN) as sink:
            for i, (image, lab) in enumerate(zip(images, labels)):
                await sink.write(Frame(i, 100.0 + i / FPS, image), message_of(i, lab, {1: 2.0, 2: 1.0}), lab)

    asyncio.run(main())
    rate, frames = decode(path)
    assert len(frames) == 5 and rate == FPS
    assert [t for t, _ in frames] == pytest.approx([i / FPS for i in range(5)], abs=1e-4)
    for (_, decoded), image, lab in zip(frames, images, labels):
        assert decoded.shape == image.shape
        inside = interior(lab, 1)
        expected = blended(image, RED, PLAIN.alpha)[inside].mean(axis=0)
        got = decoded[inside].astype(np.float64).mean(axis=0)
        source = image[inside].astype(np.float64).mean(axis=0)
        assert np.all(np.abs(got - expected) < 4), (got, expected)
        redness = lambda rgb: rgb[0] - (rgb[1] + rgb[2]) / 2  # noqa: E731
        assert redness(got) - redness(source) > 40
        assert np.abs(decoded[lab == 0].astype(np.float64).mean(axis=0) - image[lab == 0].mean(axis=0)).max() < 2


def test_writer_pads_odd_sizes_and_steps_frames_without_pts(tmp_path):
    path = tmp_path / "odd.mkv"
    with H264Writer(path, fps=10) as writer:
        for i in range(3):
            writer.write(np.full((21, 33, 3), 60 * i, np.uint8))
    _, frames = decode(path)
    assert [t for t, _ in frames] == pytest.approx([0.0, 0.1, 0.2], abs=1e-3)
    assert all(image.shape == (22, 34, 3) for _, image in frames)
    assert abs(float(frames[2][1][-1, -1, 0]) - 120) < 6  # the padded corner repeats the frame's last pixel


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".ts"])
def test_every_container_written_states_the_frames_rate(tmp_path, suffix):
    """The rate a player reads is the frames' own (from their timestamps), 10 or 30000/1001 frames/s."""
    for rate in (10, Fraction(30000, 1001)):
        path = tmp_path / f"r{float(rate):.0f}{suffix}"
        with H264Writer(path) as writer:
            for i in range(6):
                writer.write(np.full((24, 32, 3), 40 * i, np.uint8), float(i / rate))
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == rate and sum(1 for _ in container.decode(stream)) == 6


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("x.webm", "vos writes H.264 into .mp4, .mov, .mkv, .ts files, not webm"),
        ("x.gif", "not gif"),
        ("x.avi", "not avi"),  # AVI and FLV would state another frame rate than the frames have
        ("x.flv", "not flv"),
        ("x.notavideo", "no video container"),
        ("x", "without a suffix"),
    ],
)
def test_sink_refuses_paths_that_are_no_h264_video_on_open(tmp_path, name, error):
    async def main():
        async with OverlayVideoSink(tmp_path / name):
            pass

    with pytest.raises(ValueError, match=error):
        asyncio.run(main())
    assert not (tmp_path / name).exists()


def test_sink_refuses_an_unwritable_path_and_writes_no_file_without_frames(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot write the video"):
        OverlayVideoSink(tmp_path / "file" / "x.mp4").open()

    async def main():
        async with OverlayVideoSink(tmp_path / "empty.mp4"):
            pass

    asyncio.run(main())
    assert not (tmp_path / "empty.mp4").exists()


@pytest.fixture
def results(davis_root, tmp_path) -> tuple[Path, Path]:
    """A folder of 4 frames and a results folder with label maps of frames 0, 1 and 3 (and their scores)."""
    frames, out = tmp_path / "frames", tmp_path / "results"
    frames.mkdir()
    out.mkdir()
    lines = []
    for i in range(4):
        shutil.copy(davis_root / "JPEGImages" / "480p" / SEQUENCE / f"{i:05d}.jpg", frames / f"{i:05d}.jpg")
        if i != 2:
            labels = labels_of(davis_root, i)
            write_label_map(out / f"{i:05d}.png", labels)
            lines.append(message_of(i, labels, {1: 2.5, 2: -1.0}).model_dump_json())
    (out / "masks.jsonl").write_text("\n".join(lines) + "\n")
    return frames, out


def test_render_to_images_is_exact(results, davis_root, tmp_path):
    frames, out = results
    style = ["--no-captions", "--no-frame-info", "--alpha", "0.3"]
    assert vos.cli.main(["render", str(frames), str(out), "--out", str(tmp_path / "overlay"), *style, "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "overlay").iterdir()) == ["00000.png", "00001.png", "00003.png"]
    for i in (0, 1, 3):
        image, labels = read_frame(davis_root, SEQUENCE, i), labels_of(davis_root, i)
        out_image = cv2.cvtColor(cv2.imread(str(tmp_path / "overlay" / f"{i:05d}.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(out_image[labels == 0], image[labels == 0])
        assert fill_matches(out_image, image, interior(labels, 1), RED, 0.3)
        assert fill_matches(out_image, image, interior(labels, 2), GREEN, 0.3)


def test_render_summary_names_the_skipped_frames(results, tmp_path, capsys):
    frames, out = results
    assert vos.cli.main(["render", str(frames), str(out), "--out", str(tmp_path / "o"), "--image-format", "jpg", "--quiet"]) == 0
    assert "rendered 3 frames" in (err := capsys.readouterr().err) and "1 without a label map" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["00000.jpg", "00001.jpg", "00003.jpg"]


def test_render_to_video(results, tmp_path):
    frames, out = results
    assert render_results(frames, out, tmp_path / "overlay.mp4", fps=FPS).frames == 3
    rate, decoded = decode(tmp_path / "overlay.mp4")
    assert len(decoded) == 3 and decoded[0][1].shape == (480, 854, 3) and rate == FPS


def test_render_errors_say_what_to_do(results, tmp_path, capsys):
    frames, out = results

    def render(results_dir: Path, target: str = "o", source: Path = frames) -> tuple[int, str]:
        code = vos.cli.main(["render", str(source), str(results_dir), "--out", str(tmp_path / target), "--quiet"])
        return code, capsys.readouterr().err

    code, err = render(tmp_path / "nope")
    assert code == 2 and "no such results folder" in err
    shutil.copytree(out, tmp_path / "bench" / SEQUENCE)
    code, err = render(tmp_path / "bench")
    assert code == 2 and f"give e.g. {tmp_path / 'bench' / SEQUENCE}" in err
    code, err = render(out, source=tmp_path / "missing")
    assert code == 5 and "no such video file or folder of frames" in err
    small = tmp_path / "small"
    small.mkdir()
    write_label_map(small / "00001.png", np.zeros((10, 10), np.uint8))
    code, err = render(small)
    assert code == 2 and "frame 1 of" in err and "is 854x480 but its label map" in err and "10x10" in err
    unmatched = tmp_path / "unmatched"
    unmatched.mkdir()
    write_label_map(unmatched / "00042.png", np.zeros((480, 854), np.uint8))
    code, err = render(unmatched)
    assert code == 2 and "none of the 4 frames" in err and "00042.png" in err
    code, err = render(out, "o.webm")
    assert code == 2 and "vos writes H.264 into" in err
    (out / "masks.jsonl").write_text("{not json\n")
    code, err = render(out)
    assert code == 2 and "line 1 is not a masks message" in err


def test_track_renders_an_overlay_video(davis_root, tracking_checkpoint, tmp_path, capsys):
    """`--render` alone is an output: the video has every tracked frame at the source's size."""
    clip = tmp_path / f"{SEQUENCE}.mp4"
    write_video(clip, [read_frame(davis_root, SEQUENCE, i) for i in range(4)])
    first = davis_root / "Annotations" / "480p" / SEQUENCE / "00000.png"
    track = ["track", str(clip), "--checkpoint", str(tracking_checkpoint), "--image-size", "512", "--quiet"]
    track += ["--mask", f"1={first}"]
    assert vos.cli.main([*track, "--render", str(tmp_path / "bad.webm")]) == 2  # refused before the model loads
    assert "vos writes H.264 into" in capsys.readouterr().err
    assert vos.cli.main([*track, "--render", str(tmp_path / "overlay.mp4"), "--max-frames", "3"]) == 0
    _, frames = decode(tmp_path / "overlay.mp4")
    assert len(frames) == 3 and all(image.shape == (480, 854, 3) for _, image in frames)
    inside = interior(labels_of(davis_root, 0), 1)  # frame 0's mask is its mask prompt
    redness = lambda rgb: rgb[0] - (rgb[1] + rgb[2]) / 2  # noqa: E731
    source = read_frame(davis_root, SEQUENCE, 0)[inside].astype(np.float64).mean(axis=0)
    assert redness(frames[0][1][inside].astype(np.float64).mean(axis=0)) - redness(source) > 40
