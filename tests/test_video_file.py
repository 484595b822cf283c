"""Seekable video files (PyAV): random access equals sequential decoding; bad files give clear errors."""

from __future__ import annotations

import av
import numpy as np
import pytest

import vos
from tests.conftest import read_frame
from tests.video_reference import VIDEO_FPS as FPS
from tests.video_reference import write_video
from vos.streams.sources.video_file import VideoFile


@pytest.fixture(scope="module")
def clip(davis_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "car-shadow.mp4"
    frames = [read_frame(davis_root, "car-shadow", i)[:240, :320] for i in range(30)]
    write_video(path, frames)
    return path


def test_random_access_equals_sequential_decoding(clip):
    with av.open(str(clip)) as c:
        sequential = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with VideoFile(clip) as video:
        assert len(video) == len(sequential) == 30
        assert video[0].shape == (240, 320, 3) and video[0].dtype == np.uint8
        assert video.times[:3] == pytest.approx([0, 1 / FPS, 2 / FPS])
        for i in (17, 3, 29, 0, 1, 2, 16, 9, 9, -1):
            assert np.array_equal(video[i], sequential[i]), i
        assert all(np.array_equal(video[i], sequential[i]) for i in range(len(video)))
        with pytest.raises(IndexError):
            video[30]


def test_bad_files_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        VideoFile(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(ValueError, match="cannot open"):
        VideoFile(text)
    readme = tmp_path / "README.txt"  # FFmpeg's tty demuxer would draw its characters as 640x400 frames
    readme.write_text("Track objects in video.\n" * 200)
    with pytest.raises(ValueError, match="README.txt is a text file, not a video"):
        VideoFile(readme)


def test_session_opens_a_video_file(clip, tiny_checkpoint):
    model = vos.load_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=512)
    with vos.VideoSession(model, clip) as session:
        assert session.num_frames == 30 and session.frame_size == (240, 320)
        result = session.add_prompt(5, 1, box=(100, 50, 200, 150))
        assert result.masks[1].shape == (240, 320)


def test_a_file_run_skips_corrupt_frames_and_goes_on(davis_root, tmp_path):
    """Garbage written into the middle of an H.264 stream: the frames that cannot be decoded are skipped
    and counted, the index keeps counting, and the run goes on to the last frame."""
    import asyncio

    from vos.streams.sources import open_source

    n = 30
    path = tmp_path / "garbage.mp4"
    write_video(path, [read_frame(davis_root, "car-shadow", i) for i in range(n)])
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for start in (len(data) // 2, len(data) // 2 + 5000):
        data[start : start + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))

    async def run():
        async with open_source(str(path)) as source:
            return [f.index async for f in source.frames()], source.stats

    indices, stats = asyncio.run(run())
    assert stats.skipped >= 1 and len(indices) + stats.skipped == n and indices[-1] == n - 1
    assert "cannot decode frame" in stats.last_error
