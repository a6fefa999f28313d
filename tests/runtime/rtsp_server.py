"""A loopback RTSP server for the stream tests: GStreamer's RTSP server serving a test pattern as H.264.

Run by the *system* python3 (GStreamer's Python bindings come from Debian's python3-gi, not from pip):
    /usr/bin/python3 tests/runtime/rtsp_server.py --port 8554 --fps 30 --size 160x120
serves rtsp://127.0.0.1:8554/live until killed. The pattern carries a moving ball, so consecutive
frames differ. It binds 127.0.0.1 only. Prints "ready" on stdout once it listens.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--size", default="160x120", help="WxH")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    # key-int-max: a key frame every second, so a reader that reconnects decodes within a second.
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},framerate={args.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)  # one encoder for every client (a camera has one too)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
