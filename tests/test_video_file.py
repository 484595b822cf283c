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


def test_only_video_is_opened_as_video(tmp_path):
    """Subtitles, audio alone and text are refused at open; a real video in MKV as in MP4 plays, by every source kind
    that opens files (`VideoFile`, the live source's file path)."""
    import av

    from tests.video_reference import write_video
    from vos.streams.sources.base import SourceError
    from vos.streams.sources.live import PyAVSource as LiveSource

    (tmp_path / "talk.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n\n2\n00:00:01,000 --> 00:00:02,000\nBye\n")
    with av.open(str(tmp_path / "tone.wav"), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    (tmp_path / "notes.txt").write_text("Track objects in video.\n" * 200)
    for name, said in (("talk.srt", "no video stream"), ("tone.wav", "no video stream"), ("notes.txt", "text file, not a video")):
        with pytest.raises(ValueError, match=said):
            VideoFile(tmp_path / name)
        with pytest.raises(SourceError, match=said):
            LiveSource(str(tmp_path / name)).open()
    frames = [np.full((64, 96, 3), 40 * i, np.uint8) for i in range(3)]
    for suffix in (".mp4", ".mkv"):
        write_video(tmp_path / f"clip{suffix}", frames)
        with VideoFile(tmp_path / f"clip{suffix}") as video:
            assert len(video) == 3 and video[2].shape == (64, 96, 3)
        source = LiveSource(str(tmp_path / f"clip{suffix}"))
        source.open()
        source.close()


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
