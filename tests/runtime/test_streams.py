"""Live streams against a real RTSP server on 127.0.0.1 (GStreamer's, tests/runtime/rtsp_server.py):
outages, stalls, a server that never comes or goes for good, a camera that disappears, SIGKILL and
SIGTERM while writing, and a soak. Every loop is bounded in count and time.

The server runs under the system python3 with Debian's GStreamer bindings (.ci/run installs them);
without them these tests skip, and fail where $CI is set, like the CamVid tests.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from igldt.runtime import DeployError  # noqa: E402
from igldt.runtime.sinks import PARTIAL  # noqa: E402
from igldt.runtime.live import LiveSource, StreamPolicy  # noqa: E402

from .test_runtime import _frame_count, tiny_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-gi lives there, not in the venv
FAST = StreamPolicy(open_timeout=3, read_timeout=1, retries=12, backoff=0.2)  # outages found in ~1-3 s
GST_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [e for e in ('videotestsrc', 'x264enc', 'rtph264pay') if not Gst.ElementFactory.find(e)]; "
             "assert not missing, missing")


def _gstreamer_missing() -> str | None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    r = subprocess.run([SYSTEM_PYTHON, "-c", GST_CHECK], capture_output=True, text=True, timeout=60)
    if r.returncode:
        return (f"GStreamer's RTSP server is not installed ({r.stderr.strip().splitlines()[-1]}); "
                "apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi "
                "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """rtsp://127.0.0.1:<port>/live, a test pattern at `fps`; killed, restarted, stalled by the tests."""

    def __init__(self, fps: int = 30, size: str = "160x120"):
        self.port, self.fps, self.size = _free_port(), fps, size
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RtspServer":
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--fps", str(self.fps),
                                      "--size", self.size], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        line = self.proc.stdout.readline()  # "ready" once it listens; EOF if it died
        assert line.strip() == "ready", f"the RTSP server did not start on port {self.port}"
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # a stalled server dies too
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stall(self) -> None:   # connected, no frames: the process is frozen, its sockets stay open
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
def gstreamer() -> None:
    reason = _gstreamer_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def server(gstreamer):
    srv = RtspServer().start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("m") / "tiny.onnx")


def _later(seconds: float, fn) -> threading.Thread:
    t = threading.Timer(seconds, fn)
    t.start()
    return t


def _take(frames, n: int, limit_s: float, after_outage: LiveSource | None = None) -> list:
    """The next `n` frames of the iterator `frames` (one `iter(source)`: leaving a for loop over the
    source itself would close it), within `limit_s` seconds; with `after_outage`, `n` frames after
    that source's first outage ended (frames it had buffered before the outage come first)."""
    got, t0 = [], time.monotonic()
    while len(got) < n:
        frame = next(frames)
        if after_outage is None or after_outage.outages:
            got.append(frame)
        assert time.monotonic() - t0 < limit_s, f"{len(got)} frames in {limit_s}s"
    return got


OUTAGE_LINE = re.compile(r"stream rtsp://\S+: outage at \d\d:\d\d:\d\d, lasted (\d+\.\d)s, ~(\d+) frames missed; resumed")


def test_stream_survives_a_server_killed_and_restarted(server):
    notes: list[str] = []
    src = LiveSource(server.url, policy=FAST, note=notes.append)
    frames = iter(src)
    try:
        before = _take(frames, 10, limit_s=10)
        server.kill()
        restart = _later(1.5, server.start)
        after = _take(frames, 10, limit_s=20, after_outage=src)  # iteration resumes once the server is back
        restart.join()
    finally:
        src.close()
    assert len(notes) == 1, notes
    lasted, missed = OUTAGE_LINE.fullmatch(notes[0]).groups()
    assert float(lasted) >= 1.5 and int(missed) >= 30  # 30 FPS for at least 1.5 s, roughly
    indices = [f.index for f in before + after]
    assert indices == sorted(set(indices))  # never a frame twice, never out of order
    assert len(src.outages) == 1 and not src._thread.is_alive()


def test_a_stalled_stream_is_an_outage_not_a_hang(server):
    notes: list[str] = []
    src = LiveSource(server.url, policy=FAST, note=notes.append)
    frames = iter(src)
    try:
        _take(frames, 5, limit_s=10)
        server.stall()
        resume = _later(3.0, server.resume)
        t0 = time.monotonic()
        _take(frames, 5, limit_s=25, after_outage=src)
        resume.join()
    finally:
        src.close()
    assert time.monotonic() - t0 >= 2.5 and len(notes) == 1, notes
    assert OUTAGE_LINE.fullmatch(notes[0])


def test_a_stream_gone_for_good_ends_with_one_clear_error(server):
    policy = StreamPolicy(open_timeout=2, read_timeout=1, retries=2, backoff=0.2)
    src = LiveSource(server.url, policy=policy, note=lambda m: None)
    t0 = time.monotonic()
    with pytest.raises(DeployError) as e:
        for i, _ in enumerate(src):
            if i == 5:
                server.kill()
    assert time.monotonic() - t0 < 20
    msg = str(e.value)
    assert "\n" not in msg and re.search(r"stream rtsp://\S+ lost at \d\d:\d\d:\d\d and not back after 2 reconnect", msg)


def test_a_stream_that_never_comes_up_fails_after_its_retries(gstreamer):
    url = f"rtsp://127.0.0.1:{_free_port()}/live"
    t0 = time.monotonic()
    with pytest.raises(DeployError, match=r"^stream rtsp://127\.0\.0\.1:\d+/live cannot be opened; .*3 reconnect"):
        LiveSource(url, policy=StreamPolicy(open_timeout=1, read_timeout=1, retries=3, backoff=0.1))
    assert time.monotonic() - t0 < 10


FAKE_POLICY = StreamPolicy(read_timeout=1, retries=3, backoff=0.05)


class FakeCamera:
    """A V4L2 camera stand-in: `frames` reads succeed, then it is unplugged (reads fail, opens fail)
    until the test plugs it back in."""

    def __init__(self, frames: int):
        self.frames, self.n = frames, 0

    def isOpened(self):
        return True

    def get(self, prop):
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        self.n += 1
        time.sleep(0.01)
        if self.n > self.frames:
            return False, None
        return True, np.full((8, 8, 3), self.n % 256, np.uint8)

    def release(self):
        pass


def test_a_camera_unplugged_and_plugged_back_is_an_outage():
    plugged = threading.Event()
    plugged.set()
    cameras = []

    def opener(index):
        if not plugged.is_set():
            return None
        cameras.append(FakeCamera(frames=10 if not cameras else 1000))
        return cameras[-1]

    notes: list[str] = []
    src = LiveSource(0, policy=FAKE_POLICY, note=notes.append, opener=opener)
    plugged.clear()  # the first camera dies after 10 frames; reopening fails until it is back
    replug = _later(0.15, plugged.set)  # within the 3 attempts (0.05 + 0.1 + 0.2 s)
    got = _take(iter(src), 15, limit_s=10)
    replug.join()
    src.close()
    assert len(cameras) == 2 and len(notes) == 1 and notes[0].startswith("camera 0: outage at ")
    assert len(got) == 15


def test_a_camera_gone_for_good_ends_with_one_clear_error():
    opened = []

    def opener(index):  # one camera, then none
        opened.append(index)
        return FakeCamera(5) if len(opened) == 1 else None

    src = LiveSource(0, policy=FAKE_POLICY, note=lambda m: None, opener=opener)
    with pytest.raises(DeployError, match=r"^camera 0 lost at \d\d:\d\d:\d\d and not back after 3 reconnect"):
        for _ in src:
            pass


def _infer(url: str, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "igldt", "infer", url, "--model", str(model), "--out", str(out), "--save-video",
           "--save-masks", "--segment", "1", "--stream-timeout", "1", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, limit_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < limit_s, f"no {what} within {limit_s}s"
        time.sleep(0.1)


def _segments(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*.mp4") if PARTIAL not in p.name)


def test_infer_survives_an_outage_and_closes_everything_on_sigterm(server, model, tmp_path):
    out = tmp_path / "run"
    proc = _infer(server.url, model, out)
    try:
        _wait_for(lambda: len(_segments(out)) >= 1, 30, "first closed segment")
        server.kill()
        time.sleep(1.5)
        server.start()
        n = len(_segments(out))
        _wait_for(lambda: len(_segments(out)) >= n + 2, 30, "segments after the outage")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert len(OUTAGE_LINE.findall(stderr)) == 1, stderr
    assert "WARN" not in stderr and "[tcp @" not in stderr  # no native message per reconnect attempt
    assert "stopped by SIGTERM; every output closed" in stdout and "FPS end to end" in stdout
    assert re.search(r"1 outage\(s\) lasting \d+\.\ds in all", stdout)
    assert not list(out.glob(f"*{PARTIAL}*")) and not list(out.rglob(".*.tmp"))  # all closed
    segments = _segments(out)
    assert len(segments) >= 3 and all(_frame_count(v) > 0 for v in segments)
    masks = list((out / "masks").glob("*.png"))
    assert masks and all(cv2.imread(str(m), cv2.IMREAD_UNCHANGED) is not None for m in masks)


def test_infer_killed_leaves_no_truncated_file(server, model, tmp_path):
    out = tmp_path / "run"
    proc = _infer(server.url, model, out)
    try:
        _wait_for(lambda: len(_segments(out)) >= 2, 30, "two closed segments")
    finally:
        proc.kill()  # SIGKILL: no handler runs
        proc.communicate(timeout=10)
    segments = _segments(out)
    assert len(segments) >= 2 and all(_frame_count(v) > 0 for v in segments)  # every closed segment plays
    masks = list((out / "masks").glob("*.png"))
    assert masks and all(cv2.imread(str(m), cv2.IMREAD_UNCHANGED) is not None for m in masks)


def test_infer_stream_that_never_comes_up_exits_nonzero_with_one_line(gstreamer, model, tmp_path):
    url = f"rtsp://127.0.0.1:{_free_port()}/live"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "igldt", "infer", url, "--model", str(model), "--out",
                        str(tmp_path / "run"), "--reconnect", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and time.monotonic() - t0 < 30
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot be opened" in errors[0] and "2 reconnect attempts" in errors[0]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_soak_5000_frames_flat_memory_constant_threads(gstreamer, model):
    """5,000 frames read from the loopback server through source, engine threads and an annotated
    writer (benchmarks/stream_soak.py, a process of its own): resident memory grows < 20 MB after
    warm-up, the thread count holds, no frame is segmented twice."""
    srv = RtspServer(fps=120, size="96x64").start()
    try:
        r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "stream_soak.py"), "--url", srv.url, "--model",
                            str(model), "--frames", "5000"], capture_output=True, text=True, timeout=240)
    finally:
        srv.kill()
    assert r.returncode == 0, r.stderr[-2000:]
    soak = json.loads(r.stdout.strip().splitlines()[-1])
    print("soak:", soak)
    assert soak["read"] >= 5000 and soak["segmented"] + soak["dropped"] >= 5000 - 10
    assert soak["segmented_twice"] == 0 and soak["in_order"]
    assert soak["rss_end_mb"] - soak["rss_warm_mb"] < 20 and soak["threads_end"] == soak["threads_warm"]
