"""Where frames come from: an image, a folder, a glob, a video file, a camera index or a stream URL.

`open_source(spec)` returns a `Source`: iterate it for `Frame`s (RGB uint8). Cameras and streams are
`live.LiveSource`s: read on a thread that keeps only the newest frame, riding out outages.
"""
from __future__ import annotations

import glob
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from .errors import DeployError, print_note
from .frames import STREAM_PREFIXES, Frame, Source, open_decoder
from .live import LiveSource, StreamPolicy
from .preprocess import CONVERSION_NOTES, decode_image, read_image, to_rgb8

__all__ = ["Frame", "Source", "ImageSource", "VideoSource", "LiveSource", "StreamPolicy", "open_source", "list_images"]

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


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


def open_source(spec: str | int | os.PathLike, vid_stride: int = 1, convert_images: bool = False,
                note=print_note, policy: StreamPolicy | None = None) -> Source:
    """Image, folder (recursive), glob, video file, camera index (int or digits) or stream URL.
    `convert_images`: grayscale, RGBA and 16-bit image files become 8-bit RGB (noted once per kind).
    `policy`: timeouts and reconnects of a camera or stream."""
    policy = policy or StreamPolicy()
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
