"""RTSP fixtures: an H.264 clip of DAVIS frames and a loopback RTSP server (tests/rtsp_server.py) serving it.

The server runs under the system Python, which has GStreamer's Python bindings (python3-gi,
gir1.2-gst-rtsp-server-1.0); tests that need it are skipped where it cannot run.
"""

from __future__ import annotations

import functools
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["rtsp_clip", "rtsp_server"]

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
READY_TIMEOUT_S = 15.0
CLIP_SEQUENCE = "car-shadow"
CLIP_FRAMES = 40
CLIP_FPS = 10
CAMERA_X264_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency"}  # encoded as a live camera would
CLIP_GOP = 10  # a keyframe a second: a client joining the stream starts decoding within a second


@dataclass(frozen=True)
class RtspClip:
    path: Path
    height: int
    width: int
    fps: int
    frames: int


@functools.cache
def rtsp_server_missing() -> str | None:
    """Why the RTSP server cannot run here, or None."""
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstApp', '1.0');"
        " gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstApp, GstRtspServer"
    )
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{SYSTEM_PYTHON} cannot run: {e}"
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no error message"])[-1]
        return f"{SYSTEM_PYTHON} cannot import GstRtspServer: {last_line}"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """tests/rtsp_server.py in a subprocess: serves `video` at `url`; restarts on the same port."""

    def __init__(self, video: Path, port: int, log: Path, mount: str = "/cam") -> None:
        self.video = video
        self.port = port
        self.mount = mount
        self.log = log
        self.url = f"rtsp://127.0.0.1:{port}{mount}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Starts the server and waits for it to listen."""
        self.stop()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--mount", self.mount,
                 "--video", str(self.video)],
                stdout=subprocess.PIPE, stderr=log, text=True,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.process.stdout], [], [], deadline - time.monotonic())
            if not readable:
                break
            line = self.process.stdout.readline()
            if line.strip() == "READY":
                return
            if not line:  # the server exited
                break
        self.stop()
        raise RuntimeError(f"RTSP server did not start on port {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Kills the server (as a crash would) and waits for it to be gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()
            self.process = None

    def pause(self) -> None:
        """Freezes the server: connections stay open and nothing more is sent (a hung camera)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def rtsp_clip(davis_root, tmp_path_factory) -> RtspClip:
    """An H.264 mp4 of DAVIS frames, encoded as a camera would: no B-frames, a keyframe every second."""
    from tests.conftest import read_frame  # here: conftest imports this module
    from tests.video_reference import write_video

    path = tmp_path_factory.mktemp("rtsp") / f"{CLIP_SEQUENCE}.mp4"
    frames = [read_frame(davis_root, CLIP_SEQUENCE, i) for i in range(CLIP_FRAMES)]
    write_video(path, frames, gop=CLIP_GOP, fps=CLIP_FPS, b_frames=0, options=CAMERA_X264_OPTIONS)
    height, width = frames[0].shape[:2]
    return RtspClip(path, height, width, CLIP_FPS, CLIP_FRAMES)


@pytest.fixture
def rtsp_server(rtsp_clip, tmp_path):
    """A running RTSP server looping `rtsp_clip` at real-time rate on a free loopback port."""
    reason = rtsp_server_missing()
    if reason is not None:
        pytest.skip(reason)
    server = RtspServer(rtsp_clip.path, free_port(), tmp_path / "rtsp_server.log")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.resume()
        server.stop()
