"""Where results go: mask PNGs (palette-indexed or raw ids), colour overlays, an annotated video at
the source frame rate, and a window (`--show`) where a display exists."""
from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

from .errors import DeployError


def write_palette_png(path: str | Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """An 8-bit palette-indexed PNG: pixel values are the class ids (what evaluation reads back),
    viewers show the class colours. Written by hand (zlib + 4 chunks) so the runtime needs no Pillow."""
    labels = np.ascontiguousarray(labels, np.uint8)
    h, w = labels.shape
    pal = np.zeros((256, 3), np.uint8)
    pal[: min(len(palette), 256)] = np.asarray(palette, np.uint8)[:256]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), labels], axis=1).tobytes()  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
           + chunk(b"PLTE", pal.tobytes()) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """HxW ids -> HxWx3 RGB; ids beyond the palette (e.g. 255 ignore) are black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: min(len(palette), 256)] = np.asarray(palette, np.uint8)[:256]
    return lut[labels]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB image blended with the class colours (RGB out)."""
    return cv2.addWeighted(image, 1 - alpha, colorize(labels, palette), alpha, 0)


def display_available() -> bool:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:  # opencv-python-headless has no GUI: namedWindow raises
        cv2.namedWindow("igldt-probe", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("igldt-probe")
        return True
    except cv2.error:
        return False


class ResultWriter:
    """Writes each (frame, labels) pair to the outputs asked for, under one run folder."""

    def __init__(self, out_dir: str | Path, palette: np.ndarray, *, masks: bool = False, raw_ids: bool = False,
                 overlays: bool = False, video: bool = False, fps: float | None = None, show: bool = False,
                 alpha: float = 0.5):
        self.out = Path(out_dir)
        self.palette = np.asarray(palette, np.uint8)
        self.masks, self.raw_ids, self.overlays, self.video = masks, raw_ids, overlays, video
        self.fps, self.alpha, self.show = fps or 30.0, alpha, show
        if show and not display_available():
            raise DeployError("--show needs a display and an OpenCV build with GUI (not opencv-python-headless); "
                              "drop --show or use --save-video")
        self._writer: cv2.VideoWriter | None = None
        self.video_path: Path | None = None
        self.written = 0
        for flag, sub in ((masks, "masks"), (overlays, "overlays")):
            if flag:
                (self.out / sub).mkdir(parents=True, exist_ok=True)
        if video:
            self.out.mkdir(parents=True, exist_ok=True)

    def write(self, frame, labels: np.ndarray, video_name: str = "result") -> None:
        if self.masks:
            path = self.out / "masks" / f"{frame.name}.png"
            if self.raw_ids:
                cv2.imwrite(str(path), labels)
            else:
                write_palette_png(path, labels, self.palette)
        blended = None
        if self.overlays or self.video or self.show:
            blended = cv2.cvtColor(overlay(frame.image, labels, self.palette, self.alpha), cv2.COLOR_RGB2BGR)
        if self.overlays:
            cv2.imwrite(str(self.out / "overlays" / f"{frame.name}.jpg"), blended)
        if self.video:
            if self._writer is None:
                h, w = blended.shape[:2]
                self.video_path = self.out / f"{video_name}.mp4"
                self._writer = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
                if not self._writer.isOpened():
                    raise DeployError(f"cannot write video {self.video_path} (no mp4v encoder in this OpenCV); "
                                      f"use --save-overlay instead")
            self._writer.write(blended)
        if self.show:
            cv2.imshow("igldt", blended)
            cv2.waitKey(1)
        self.written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.show:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
