"""Cameras and network streams: a reader thread that keeps only the newest frame and rides out what
real cameras do (the server dies, the Wi-Fi drops, the stream stalls, the USB camera is unplugged):
reconnect with backoff, one line per outage, one error when the source does not come back.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import DeployError, print_note
from .frames import Frame, Source, open_decoder


@dataclass(frozen=True)
class StreamPolicy:
    """How a live source rides out a camera or network that drops. An outage is a failed read, a lost
    device, or a stall (connected, no frame for `read_timeout` s: FFmpeg's read timeout ends the
    blocked read, or the stream comes back first and the gap between two frames says so). The reader
    reconnects up to `retries` times, `backoff` s first, doubling to `MAX_BACKOFF`. OpenCV's FFmpeg
    default for both timeouts is 30 s (Frigate uses 10 s); a few seconds tells an outage from a slow
    frame on any camera that sends at least one frame a second."""
    open_timeout: float = 10.0
    read_timeout: float = 3.0
    retries: int = 8
    backoff: float = 0.5


# OpenCV tries a timed-out stream read again before it fails: against a frozen RTSP server a read
# timeout of 1 s failed after 3.0 s, 0.33 s after 0.8 s (measured here), so FFmpeg gets a third.
READ_TRIES = 3
MAX_BACKOFF = 8.0  # s between reconnect attempts, at most: a camera that comes back is found within it


def clock(t: float) -> str:
    """A time.time() as the local wall-clock time the outage lines name."""
    return time.strftime("%H:%M:%S", time.localtime(t))


@dataclass(frozen=True)
class Outage:
    began: float      # time.time() of the last frame before it
    lasted: float     # s until the first frame after it
    missed: int       # frames the source would have sent meanwhile, at its frame rate

    def line(self, what: str) -> str:
        return f"{what}: outage at {clock(self.began)}, lasted {self.lasted:.1f}s, ~{self.missed} frames missed; resumed"


class LiveSource(Source):
    """Camera or network stream: a reader thread keeps only the newest frame (a slow model never works
    on stale frames, no frame is yielded twice) and rides out outages by `StreamPolicy`: one line per
    outage once the stream is back; when it does not come back, iteration ends with a `DeployError`.

    `opener(target) -> capture | None`: how a capture is opened (tests pass a fake camera)."""
    live = True

    def __init__(self, target: int | str, vid_stride: int = 1, policy: StreamPolicy = StreamPolicy(),
                 note=print_note, opener=None):
        self.target, self.stride, self.policy, self.note = target, max(1, int(vid_stride)), policy, note
        self.kind = "camera" if isinstance(target, int) else "stream"
        self.name = f"camera{target}" if isinstance(target, int) else "stream"
        self.what = f"camera {target}" if isinstance(target, int) else f"stream {target}"
        self._opener = opener or self._open
        self._stop = threading.Event()
        # A camera index that does not exist is a typo, not an outage: fail at once; a stream may still be starting.
        self.cap = self._opener(target) if self.kind == "camera" else self._reconnect(first=True)
        if self.cap is None:
            hint = "check the index (try 0) and that no other program holds it" if self.kind == "camera" \
                else f"check the URL, credentials and network ({policy.retries} reconnect attempts made)"
            raise DeployError(f"{self.what} cannot be opened; {hint}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else 30.0
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._ended = False
        self.error: DeployError | None = None   # why the source ended, when it was not closed
        self.read = 0                           # frames read from the source (every one, before --vid-stride)
        self.dropped = 0                        # read but replaced by a newer one before the consumer took it
        self.outages: list[Outage] = []
        self._thread = threading.Thread(target=self._reader, name=f"igldt-{self.name}", daemon=True)
        self._thread.start()

    def _open(self, target):
        if isinstance(target, int):
            if sys.platform.startswith("linux") and not Path(f"/dev/video{target}").exists():
                return None  # fail fast: V4L2 would otherwise probe and time out
            cap = cv2.VideoCapture(target)
        else:  # FFmpeg takes its timeouts at open time only (opencv#23207)
            ms = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.policy.open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.policy.read_timeout * 1000 / READ_TRIES)]
            cap = open_decoder(target, ms)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _reconnect(self, first: bool = False):
        """A capture again, or None after `policy.retries` attempts (or a close). `first`: the opening
        of the source, tried at once before the retries."""
        delays = [0.0] * first + [min(self.policy.backoff * 2 ** k, MAX_BACKOFF) for k in range(self.policy.retries)]
        for delay in delays:
            if self._stop.wait(delay):
                return None
            cap = self._opener(self.target)
            if cap is not None:
                return cap
        return None

    def _reader(self):
        # `flowing`: when a read last returned a frame in time. A read that returns only after a timeout
        # (FFmpeg hands over a late frame before it gives up) does not count, so a stall that ends by
        # itself is an outage too once it outlasts `read_timeout`.
        in_time = self.policy.read_timeout / READ_TRIES if self.kind == "stream" else self.policy.read_timeout
        flowing, down = time.time(), None  # down: when the current outage began
        try:
            while not self._stop.is_set():
                asked = time.time()
                ok, frame = self.cap.read()
                now = time.time()
                if not ok or frame is None:
                    down = flowing if down is None else down
                    if not self._reconnect_after(down):
                        return
                    continue
                if now - asked < in_time:
                    if down is None and now - flowing > self.policy.read_timeout:
                        down = flowing
                    flowing = now
                    if down is not None:
                        self._outage_over(down, now)
                        down = None
                self._publish(frame)
        finally:
            with self._new:
                self._ended = True
                self._new.notify_all()

    def _reconnect_after(self, down: float) -> bool:
        """A new capture after a failed read; False (with `self.error` unless closed) when none comes."""
        self.cap.release()
        self.cap = self._reconnect()
        if self.cap is None and not self._stop.is_set():
            self.error = DeployError(f"{self.what} lost at {clock(down)} and not back after {self.policy.retries} reconnect "
                                     f"attempts ({time.time() - down:.0f}s); check the camera and the network")
        return self.cap is not None

    def _outage_over(self, down: float, now: float) -> None:
        outage = Outage(down, now - down, max(0, round((now - down) * self.fps) - 1))
        self.outages.append(outage)
        self.note(outage.line(self.what))

    def _publish(self, frame: np.ndarray) -> None:
        """Hand `frame` to the consumer, replacing one it has not taken (every `stride`-th frame only)."""
        self.read += 1
        if (self.read - 1) % self.stride:
            return
        with self._new:
            if self._frame is not None:
                self.dropped += 1  # the consumer was slower than the source: keep only the newest
            self._frame = frame
            self._seq = self.read
            self._new.notify_all()

    def __iter__(self):
        last = 0
        try:
            while True:
                with self._new:
                    while self._seq == last and not self._ended and not self._stop.is_set():
                        self._new.wait(0.5)
                    if self._seq == last or self._stop.is_set():
                        break
                    frame, last = self._frame, self._seq
                    self._frame = None
                yield Frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), f"{self.name}_{last:06d}", last - 1, bgr=frame)
        finally:
            self.close()
        if self.error is not None:
            raise self.error

    def close(self):
        self._stop.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            # A read blocked on a stalled stream returns within the read timeout.
            self._thread.join(timeout=self.policy.read_timeout + 2)
        if self.cap is not None and not self._thread.is_alive():
            self.cap.release()
            self.cap = None
