"""Live sources (PyAV) against a real loopback RTSP server: frames, drops, reconnection, timeouts, clear errors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
import time
from collections.abc import Awaitable, Callable

import av
import numpy as np
import pytest

from tests.rtsp_fixtures import RtspClip, free_port
from vos.streams.sources import LiveSettings
from vos.streams.sources.base import Frame, SourceError
from vos.streams.sources.live import PyAVSource

TIMEOUT_S = 1.0
SLACK_S = 1.5  # process start-up and scheduling on a busy machine
COLLECT_TIMEOUT_S = 20.0


def collect(
    source: PyAVSource,
    count: int | None,
    delay_s: float = 0.0,
    during: Callable[[list[Frame]], Awaitable[None]] | None = None,
    on_status: Callable[[str, str], None] | None = None,
) -> list[Frame]:
    """Up to `count` frames (all if None), sleeping `delay_s` after each; `during(frames)` runs after each frame."""

    async def main() -> list[Frame]:
        frames: list[Frame] = []
        async with asyncio.timeout(COLLECT_TIMEOUT_S), contextlib.aclosing(source.frames(on_status)) as stream:
            async for frame in stream:
                frames.append(frame)
                if during is not None:
                    await during(frames)
                if len(frames) == count:
                    break
                await asyncio.sleep(delay_s)
        return frames

    return asyncio.run(main())


def digest(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).hexdigest()


def clip_digests(clip: RtspClip) -> set[str]:
    with av.open(str(clip.path)) as c:
        return {digest(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)}


def stalled_server() -> socket.socket:
    """A listening socket: the kernel completes connections to it, nothing ever answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_reads_the_clip_from_rtsp(rtsp_server, rtsp_clip):
    source = PyAVSource(rtsp_server.url, settings=LiveSettings(timeout=5.0))
    assert source.live and source.buffer_size == 1
    source.open()
    frames = collect(source, 20)
    assert len(frames) == 20
    assert all(f.image.shape == (rtsp_clip.height, rtsp_clip.width, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(a.index < b.index for a, b in zip(frames, frames[1:]))
    # the stream carries the clip's own H.264, so every frame decodes to exactly one of the clip's frames
    assert {digest(f.image) for f in frames} <= clip_digests(rtsp_clip)
    assert source.stats.decoded >= 20  # a reconnect may happen: a host stalled for seconds breaks a live stream too


def test_a_slow_consumer_gets_the_newest_frames(rtsp_server):
    source = PyAVSource(rtsp_server.url)
    source.open()
    frames = collect(source, 6, delay_s=0.4)  # 2.5 frames a second from a 10 fps stream
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    assert any(b - a > 1 for a, b in zip(indices, indices[1:])), indices
    assert source.stats.dropped > 0
    assert source.stats.decoded >= len(frames) + source.stats.dropped


def test_reconnects_when_the_server_restarts(rtsp_server, rtsp_clip):
    events: list[tuple[str, str]] = []
    source = PyAVSource(rtsp_server.url, settings=LiveSettings(reconnect_initial=0.2, reconnect_max=1.0))
    on_status = lambda state, detail: events.append((state, detail))  # noqa: E731
    restarted_at: list[int] = []

    async def restart_after_five(frames: list[Frame]) -> None:
        if len(frames) == 5:
            await asyncio.to_thread(rtsp_server.stop)
            await asyncio.to_thread(rtsp_server.start)
            restarted_at.append(len(frames))

    frames = collect(source, 12, during=restart_after_five, on_status=on_status)
    states = [state for state, _ in events]
    assert states[0] == "connected" and "disconnected" in states
    assert "connected" in states[states.index("disconnected") :], states
    assert source.stats.reconnects >= 1 and source.stats.last_error
    assert len(frames) == 12 and restarted_at == [5]
    assert all(a.index < b.index for a, b in zip(frames, frames[1:]))
    assert all(f.image.shape == (rtsp_clip.height, rtsp_clip.width, 3) for f in frames)


def test_a_hung_server_is_a_disconnect(rtsp_server):
    events: list[tuple[str, str, float]] = []
    source = PyAVSource(rtsp_server.url, settings=LiveSettings(timeout=TIMEOUT_S, reconnect_initial=0.1))
    on_status = lambda state, detail: events.append((state, detail, time.monotonic()))  # noqa: E731
    paused_at: list[float] = []

    async def pause_at_three(frames: list[Frame]) -> None:
        if len(frames) == 3:
            rtsp_server.pause()
            paused_at.append(time.monotonic())
            while not any(state == "disconnected" for state, _, _ in events):
                await asyncio.sleep(0.02)
            rtsp_server.resume()

    source.open()
    frames = collect(source, 6, during=pause_at_three, on_status=on_status)
    _, reason, disconnected_at = next(e for e in events if e[0] == "disconnected")
    assert "nothing received within 1 s" in reason, events
    # one socket timeout, then FFmpeg's RTSP demuxer waits another before giving up
    assert disconnected_at - paused_at[0] < 2 * TIMEOUT_S + SLACK_S, (paused_at, events)
    assert source.stats.reconnects >= 1 and len(frames) == 6, (source.stats, events)


def test_an_unreachable_url_fails_at_once():
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    source = PyAVSource(url)
    started = time.monotonic()
    with pytest.raises(SourceError, match=re.escape(f"cannot connect to {url}: Connection refused")):
        source.open()
    assert time.monotonic() - started < SLACK_S


def test_a_server_that_never_answers_times_out():
    with stalled_server() as server:
        url = f"rtsp://127.0.0.1:{server.getsockname()[1]}/cam"
        started = time.monotonic()
        with pytest.raises(SourceError, match=re.escape(f"cannot connect to {url}: nothing received within 1 s")):
            PyAVSource(url, settings=LiveSettings(timeout=TIMEOUT_S)).open()
        assert time.monotonic() - started < TIMEOUT_S + SLACK_S


def test_stop_ends_frames_while_reconnecting():
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    source = PyAVSource(url, settings=LiveSettings(reconnect_initial=30.0, reconnect_max=30.0))
    events: list[str] = []
    on_status = lambda state, detail: events.append(state)  # noqa: E731

    async def main() -> float:
        async def stop_when_waiting() -> None:
            while "reconnecting" not in events:
                await asyncio.sleep(0.02)
            source.stop()

        stopper = asyncio.create_task(stop_when_waiting())
        started = time.monotonic()
        async with asyncio.timeout(COLLECT_TIMEOUT_S):
            assert [f async for f in source.frames(on_status)] == []
        await stopper
        return time.monotonic() - started

    assert asyncio.run(main()) < SLACK_S
    assert events == ["disconnected", "reconnecting"]
    assert "Connection refused" in source.stats.last_error


def test_lavfi_is_finite_and_loses_nothing():
    source = PyAVSource("testsrc=size=64x48:rate=10:duration=1", format="lavfi")
    events: list[str] = []
    on_status = lambda state, detail: events.append(state)  # noqa: E731
    assert not source.live
    source.open()
    frames = collect(source, None, delay_s=0.01, on_status=on_status)
    assert [f.index for f in frames] == list(range(10))
    assert [f.pts for f in frames] == pytest.approx([i / 10 for i in range(10)])
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    assert source.stats.dropped == 0 and source.stats.decoded == 10
    assert events == ["connected", "ended"]
    with pytest.raises(SourceError, match="cannot open nosuchfilter=1"):
        PyAVSource("nosuchfilter=1", format="lavfi").open()


def test_a_missing_webcam_is_refused_clearly():
    source = PyAVSource("/dev/video99")
    assert source.format == "v4l2" and source.live
    with pytest.raises(SourceError, match="cannot open /dev/video99: No such file or directory"):
        source.open()
    source = PyAVSource("/dev/video99", settings=LiveSettings(reconnect_initial=0.01, max_reconnects=2))
    with pytest.raises(SourceError, match="gave up on /dev/video99 after 2 reconnection attempts: cannot open"):
        collect(source, 1)


def test_credentials_never_show_in_errors_or_status():
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/cam"
    source = PyAVSource(url, settings=LiveSettings(reconnect_initial=0.01, max_reconnects=1))
    events: list[str] = []
    with pytest.raises(SourceError) as error:
        collect(source, 1, on_status=lambda state, detail: events.append(detail))
    texts = [str(error.value), source.name, source.stats.last_error or "", *events]
    assert all("hunter2" not in t for t in texts) and "rtsp://admin:***@127.0.0.1" in str(error.value), texts
