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


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


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
        cap = cv2.VideoCapture(str(path))
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
                    yield Frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), f"{self.path.stem}_{i:06d}", i, str(self.path))
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


class LiveSource(Source):
    """Camera or network stream: a reader thread keeps only the newest frame and reconnects with backoff."""
    live = True

    def __init__(self, target: int | str, vid_stride: int = 1, max_retries: int = 8, backoff: float = 0.5):
        self.target, self.stride = target, max(1, int(vid_stride))
        self.kind = "camera" if isinstance(target, int) else "stream"
        self.max_retries, self.backoff = max_retries, backoff
        self.name = f"camera{target}" if isinstance(target, int) else "stream"
        self.cap = self._open()
        if self.cap is None:
            what = f"camera {target}" if isinstance(target, int) else f"stream {target}"
            hint = "check the index (try 0) and that no other program holds it" if isinstance(target, int) \
                else "check the URL, credentials and network"
            raise DeployError(f"{what} cannot be opened; {hint}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else 30.0
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._ended = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._reader, name=f"igldt-{self.name}", daemon=True)
        self._thread.start()

    def _open(self):
        t = self.target
        if isinstance(t, int) and sys.platform.startswith("linux") and not Path(f"/dev/video{t}").exists():
            return None  # fail fast: V4L2 would otherwise probe and time out
        cap = cv2.VideoCapture(t)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _reader(self):
        retries, n = 0, 0
        while not self._stop.is_set():
            ok, frame = self.cap.read() if self.cap is not None else (False, None)
            if not ok or frame is None:
                if self.cap is not None:
                    self.cap.release()
                    self.cap = None
                if retries >= self.max_retries:
                    print(f"warning: {self.name} {self.target} lost after {retries} reconnect attempts", file=sys.stderr)
                    break
                delay = min(self.backoff * (2 ** retries), 8.0)
                retries += 1
                if self._stop.wait(delay):
                    break
                self.cap = self._open()
                continue
            retries = 0
            n += 1
            if (n - 1) % self.stride:
                continue
            with self._new:
                if self._frame is not None:
                    self.dropped += 1  # the consumer was slower than the source: keep only the newest
                self._frame = frame
                self._seq += 1
                self._new.notify_all()
        with self._new:
            self._ended = True
            self._new.notify_all()

    def __iter__(self):
        last = 0
        try:
            while True:
                with self._new:
                    while self._seq == last and not self._ended and not self._stop.is_set():
                        self._new.wait(0.5)
                    if self._seq == last or self._stop.is_set():
                        return
                    frame, last = self._frame, self._seq
                    self._frame = None
                yield Frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), f"{self.name}_{last:06d}", last)
        finally:
            self.close()

    def close(self):
        self._stop.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=2)
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def open_source(spec: str | int | os.PathLike, vid_stride: int = 1, convert_images: bool = False,
                note=print_note) -> Source:
    """Image, folder (recursive), glob, video file, camera index (int or digits) or stream URL.
    `convert_images`: grayscale, RGBA and 16-bit image files become 8-bit RGB (noted once per kind)."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return LiveSource(int(spec), vid_stride)
    s = str(spec)
    if s.lower().startswith(STREAM_PREFIXES):
        return LiveSource(s, vid_stride)
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
