"""A loopback RTSP server that plays an H.264 mp4 clip in a loop, at real-time rate, like a camera.

Run it with the system Python (it needs Debian's python3-gi and gst-rtsp-server):

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --mount /cam --video clip.mp4

It prints READY once listening on rtsp://127.0.0.1:PORT/MOUNT. The clip's H.264 access units are
demuxed once into memory; one shared media pushes them into a live `appsrc` on a wall-clock
schedule, restarting the clip at its end with timestamps that keep increasing, so clients see an
endless live stream (a file pipeline would end with EOS, and is not paced like a live source
while it prerolls). The access units already carry SPS/PPS before each keyframe: the payloader
must not insert them again (`config-interval=-1` on rtph264pay put them between the slices of
a keyframe, and FFmpeg then decoded each half as a frame of its own).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402, F401  (GstApp: appsrc's push_buffer)

LOAD_TIMEOUT_S = 10.0
# the queue before the payloader only fills while a new client is being set up; keep it short
MEDIA_LAUNCH = (
    "( appsrc name=src is-live=true format=time max-buffers=5 leaky-type=downstream"
    " ! rtph264pay name=pay0 pt=96 )"
)


class Clip:
    """The access units of an H.264 mp4 as byte-stream buffers, each carrying SPS/PPS before its keyframes."""

    def __init__(self, path: str) -> None:
        pipeline = Gst.parse_launch(
            f'filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1'
            " ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=out sync=false"
        )
        sink = pipeline.get_by_name("out")
        pipeline.set_state(Gst.State.PLAYING)
        samples = []
        while (sample := sink.emit("try-pull-sample", int(LOAD_TIMEOUT_S * Gst.SECOND))) is not None:
            samples.append(sample)
        failed = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        pipeline.set_state(Gst.State.NULL)
        if failed is not None or len(samples) < 2:
            detail = failed.parse_error()[0].message if failed is not None else "fewer than 2 frames"
            raise RuntimeError(f"cannot read {path} as H.264 mp4: {detail}")
        self.caps = samples[0].get_caps()
        self.buffers = [s.get_buffer() for s in samples]
        self.interval_ns = self.buffers[1].pts - self.buffers[0].pts


class Feeder:
    """Pushes the clip into one media's appsrc at real-time rate until the media is unprepared."""

    def __init__(self, clip: Clip, media: GstRtspServer.RTSPMedia) -> None:
        self.clip = clip
        self.src = media.get_element().get_by_name("src")
        self.src.set_property("caps", clip.caps)
        self.done = threading.Event()
        media.connect("unprepared", lambda _media: self.done.set())
        threading.Thread(target=self.run, name="feeder", daemon=True).start()

    def run(self) -> None:
        interval_s = self.clip.interval_ns / Gst.SECOND
        start = time.monotonic()
        tick = 0
        while True:
            late_s = time.monotonic() - (start + tick * interval_s)
            if late_s > interval_s:  # the process was frozen (SIGSTOP): go on from now, without a burst
                start += late_s
                late_s = 0.0
            if self.done.wait(max(0.0, -late_s)):
                return
            clock = self.src.get_clock()
            if clock is not None:  # the pipeline runs: stamp with its running time, as a camera would
                buffer = self.clip.buffers[tick % len(self.clip.buffers)].copy()
                buffer.pts = clock.get_time() - self.src.get_base_time()
                buffer.dts = Gst.CLOCK_TIME_NONE
                buffer.duration = self.clip.interval_ns
                if self.src.push_buffer(buffer) != Gst.FlowReturn.OK:
                    return
            tick += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", required=True, help="path of the stream, e.g. /cam")
    parser.add_argument("--video", required=True, help="an H.264 mp4 clip")
    args = parser.parse_args()

    Gst.init(None)
    clip = Clip(args.video)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(MEDIA_LAUNCH)
    factory.set_shared(True)
    factory.connect("media-configure", lambda _factory, media: Feeder(clip, media))

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print("READY", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
