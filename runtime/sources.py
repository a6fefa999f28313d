"""Where frames come from: an image, a folder, a glob, a video file, a camera index or a stream URL.

`open_source(spec)` returns a `Source`: iterate it for `Frame`s (RGB uint8). Live sources (camera,
RTSP/HTTP) are read on a thread that keeps only the newest frame, so a slow model never works on
stale frames, and that reconnects with exponential backoff when the stream drops.
"""
from __future__ import annotations

import glob
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import DeployError, print_note
from .preprocess import CONVERSION_NOTES, decode_image, read_image, to_rgb8

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass
class Frame:
    image: np.ndarray   # HxWx3 uint8 RGB
    name: str           # file stem, or <source>_<frame index>
    index: int          # position in the source (frames skipped by --vid-stride still count)
    path: str = ""      # the file it came from, when there is one
    bgr: np.ndarray | None = None  # the decoded BGR frame of a video or stream: the video sink draws on it
                                   # without converting `image` back


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


# One FFmpeg decoding thread: the engine's threads already fill the cores, and FFmpeg's frame threads
# cost CPU to hand frames over: a 360x480 mp4v frame took 0.71 ms of CPU on one thread against 1.12 ms
# at FFmpeg's default (benchmarks/runtime_video.py --profile, 2026-12-07).
DECODE_THREADS = 1


def open_decoder(target: str, params: list[int] = ()) -> cv2.VideoCapture:
    """A video file or stream opened with FFmpeg (`params`: OpenCV open-time properties) on
    DECODE_THREADS threads; whatever OpenCV picks where FFmpeg cannot open it."""
    cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, [*params, cv2.CAP_PROP_N_THREADS, DECODE_THREADS])
    if cap.isOpened() or target.lower().startswith(STREAM_PREFIXES):
        return cap
    cap.release()
    return cv2.VideoCapture(target)


class Source:
    kind = "images"      # images | video | camera | stream
    live = False
    fps: float | None = None
    count: int | None = None   # frames this source will yield, when known
    size: tuple[int, int] | None = None  # (H, W) of frames, when known

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ImageSource(Source):
    """Image files, strict by default (8-bit BGR only); with `convert`, grayscale, RGBA and 16-bit files
    become 8-bit RGB, with one `note` per kind of conversion (the CLI's behaviour; `Predictor` stays strict)."""
    kind = "images"

    def __init__(self, paths: list[Path], spec: str, convert: bool = False, note=print_note):
        self.paths, self.spec, self.count = paths, spec, len(paths)
        self.convert, self.note, self.noted = convert, note, set()

    def __iter__(self):
        for i, p in enumerate(self.paths):
            yield Frame(self.read(p), p.stem, i, str(p))

    def read(self, path: Path) -> np.ndarray:
        if not self.convert:
            return read_image(path)
        img, done = to_rgb8(decode_image(path), str(path))
        for kind in done:
            if kind not in self.noted:
                self.noted.add(kind)
                self.note(CONVERSION_NOTES[kind].format(path=path))
        return img


class VideoSource(Source):
    kind = "video"

    def __init__(self, path: Path, vid_stride: int = 1):
        self.path, self.stride = path, max(1, int(vid_stride))
        cap = open_decoder(str(path))
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            raise DeployError(f"video {path} cannot be read (corrupt, empty or unsupported codec); "
                              f"check it plays, or re-encode it (ffmpeg -i in.mov -c:v libx264 out.mp4)")
        self.cap, self._first = cap, first
        # The pipeline closes the source from its own thread while the decode thread may be reading:
        # a release during read() deadlocked FFmpeg's scaler threads (seen in CI), so never both at once.
        self._lock = threading.Lock()
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 and fps < 1000 else 30.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.count = -(-n // self.stride) if n > 0 else None
        self.size = first.shape[:2]

    def __iter__(self):
        i, frame = 0, self._first
        try:
            while frame is not None:
                if frame.ndim == 3 and frame.shape[2] == 3:
                    yield Frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), f"{self.path.stem}_{i:06d}", i, str(self.path),
                                frame)
                for _ in range(self.stride - 1):  # grab() skips decoding to RGB: cheap frame skipping
                    with self._lock:
                        if not self.cap.grab():  # False once closed, too
                            return
                    i += 1
                with self._lock:
                    ok, frame = self.cap.read()
                i += 1
                if not ok:
                    return
        finally:
            self.close()

    def close(self):
        with self._lock:
            self.cap.release()


@dataclass(frozen=True)
class StreamPolicy:
    """How a live source rides out a camera or network that drops: an outage is a failed read, a lost
    device, or a stall (connected, no frame for `read_timeout` s: FFmpeg's read timeout ends the
    blocked read, or the stream comes back first and the gap between two frames says so); the reader reconnects up to `retries` times, `backoff` s first, doubling to `MAX_BACKOFF`.
    OpenCV's FFmpeg default for both timeouts is 30 s (LEADS: Frigate uses 10 s); a few seconds
    tells an outage from a slow frame on any camera that sends at least one frame a second."""
    open_timeout: float = 10.0
    read_timeout: float = 3.0
    retries: int = 8
    backoff: float = 0.5


# OpenCV tries a timed-out stream read again before it fails: against a frozen RTSP server a read
# timeout of 1 s failed after 3.0 s, 0.33 s after 0.8 s (measured here), so FFmpeg gets a third.
READ_TRIES = 3
MAX_BACKOFF = 8.0  # s between reconnect attempts, at most: a camera that comes back is found within it


@dataclass(frozen=True)
class Outage:
    began: float      # time.time() of the last frame before it
    lasted: float     # s until the first frame after it
    missed: int       # frames the source would have sent meanwhile, at its frame rate

    def line(self, what: str) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.began))
        return f"{what}: outage at {when}, lasted {self.lasted:.1f}s, ~{self.missed} frames missed; resumed"


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
            when = time.strftime("%H:%M:%S", time.localtime(down))
            self.error = DeployError(f"{self.what} lost at {when} and not back after {self.policy.retries} reconnect "
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


def open_source(spec: str | int | os.PathLike, vid_stride: int = 1, convert_images: bool = False,
                note=print_note, policy: StreamPolicy = StreamPolicy()) -> Source:
    """Image, folder (recursive), glob, video file, camera index (int or digits) or stream URL.
    `convert_images`: grayscale, RGBA and 16-bit image files become 8-bit RGB (noted once per kind).
    `policy`: timeouts and reconnects of a camera or stream."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return LiveSource(int(spec), vid_stride, policy, note)
    s = str(spec)
    if s.lower().startswith(STREAM_PREFIXES):
        return LiveSource(s, vid_stride, policy, note)
    if any(c in s for c in "*?["):
        paths = sorted(Path(p) for p in glob.glob(s, recursive=True))
        images = [p for p in paths if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
        if not images:
            raise DeployError(f"glob {s} matches no images ({', '.join(sorted(IMAGE_EXTS))})")
        return ImageSource(images, s, convert_images, note)
    p = Path(s)
    if not p.exists():
        raise DeployError(f"source {s} does not exist; give an image, a folder, a glob, a video, a camera index or a URL")
    if p.is_dir():
        images = list_images(p)
        if not images:
            videos = [q.name for q in sorted(p.iterdir()) if q.suffix.lower() in VIDEO_EXTS]
            extra = f" (it holds videos: pass one of them, e.g. {p / videos[0]})" if videos else ""
            raise DeployError(f"folder {p} holds no images{extra}")
        return ImageSource(images, s, convert_images, note)
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTS:
        return ImageSource([p], s, convert_images, note)
    if suffix in VIDEO_EXTS:
        return VideoSource(p, vid_stride)
    # unknown suffix: let OpenCV try it as a video, which also covers odd containers
    return VideoSource(p, vid_stride)
