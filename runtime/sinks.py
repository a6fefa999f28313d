"""Where results go: mask PNGs (palette-indexed or raw ids), colour overlays, an annotated video at
the source frame rate (H.264 where this OpenCV can encode it, else mp4v, said in a note), and a window
(`--show`) where a display exists."""
from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

from igldt.palette import colorize

from .errors import DeployError, print_note

H264_FOURCCS = ("avc1", "H264", "X264")  # the names OpenCV builds accept for an H.264 encoder
FALLBACK_FOURCC = "mp4v"                 # MPEG-4 Part 2: in every FFmpeg build, not played by most browsers
# The annotated video's bit rate: 0.4 bit a pixel (2.1 Mbit/s at 480x360, 30 FPS), a third of what
# FFmpeg's mpeg4 picked by itself; its encoding took 0.80 ms of CPU a frame against 1.08 ms
# (benchmarks/runtime_video.py --profile, 2026-12-07): CPU that the engine's threads want. Overlays
# stay legible; `--save-masks` keeps the labels lossless.
VIDEO_BITS_PER_PIXEL = 0.4
MP4V_NOTE = ("note: {path} is mp4v (MPEG-4 Part 2), not playable in most browsers: this OpenCV has no H.264 "
             "encoder; use an OpenCV built with FFmpeg+libx264 or OpenH264, or re-encode: "
             "ffmpeg -i {path} -c:v libx264 -pix_fmt yuv420p -movflags +faststart {h264}")


PARTIAL = ".partial"  # a video segment being written: renamed to its final name once closed (and playable)


def partial_path(video: Path) -> Path:
    """Where `video` is written until it is closed."""
    return video.with_suffix(f"{PARTIAL}.mp4")


def write_atomic(path: str | Path, data: bytes) -> None:
    """`data` into `path` through a temporary file and a rename: a kill mid-write leaves the old file or
    none, never a truncated one under the final name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def encode_image(path: Path, image: np.ndarray) -> bytes:
    """`image` encoded as `path`'s suffix says (PNG, JPEG, ...)."""
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise DeployError(f"cannot encode {path}")
    return buf.tobytes()


def write_palette_png(path: str | Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """An 8-bit palette-indexed PNG: pixel values are the class ids (what evaluation reads back),
    viewers show the class colours. Written by hand (zlib + 4 chunks) so the runtime needs no Pillow;
    atomically (`write_atomic`)."""
    labels = np.ascontiguousarray(labels, np.uint8)
    h, w = labels.shape
    pal = np.zeros((256, 3), np.uint8)
    pal[: min(len(palette), 256)] = np.asarray(palette, np.uint8)[:256]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), labels], axis=1).tobytes()  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
           + chunk(b"PLTE", pal.tobytes()) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    write_atomic(path, png)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`image` blended with the class colours, in the channel order `image` and `palette` share."""
    return cv2.addWeighted(image, 1 - alpha, colorize(labels, palette), alpha, 0)


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence file descriptor 2 for a moment: FFmpeg and OpenCV print every failed encoder probe there."""
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def open_video_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    """(writer, fourcc): the first of H264_FOURCCS this OpenCV opens, else mp4v; `size` is (W, H);
    at VIDEO_BITS_PER_PIXEL."""
    bitrate = [cv2.VIDEOWRITER_PROP_BITRATE, int(VIDEO_BITS_PER_PIXEL * size[0] * size[1] * fps)]
    for fourcc in (*H264_FOURCCS, FALLBACK_FOURCC):
        with quiet_native_stderr():
            writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, size, bitrate)
        if writer.isOpened():
            return writer, fourcc
        writer.release()
        path.unlink(missing_ok=True)
    raise DeployError(f"cannot write video {path}: this OpenCV has neither an H.264 nor an mp4v encoder; "
                      f"use --save-overlay instead")


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
    """Writes each (frame, labels) pair to the outputs asked for, under one run folder. Nothing is
    half-written under a final name: images go through `write_atomic`, and the video is written as
    `<name>.partial.mp4`, renamed to `<name>.mp4` when closed. `segment_frames` > 0 closes the video
    every that many frames (`<name>_000.mp4`, `_001`, ...), so a killed live run keeps every closed
    segment playable."""

    def __init__(self, out_dir: str | Path, palette: np.ndarray, *, masks: bool = False, raw_ids: bool = False,
                 overlays: bool = False, video: bool = False, fps: float | None = None, show: bool = False,
                 alpha: float = 0.5, note=print_note, segment_frames: int = 0):
        self.out = Path(out_dir)
        self.note = note  # one-line messages (the mp4v fallback)
        self.palette = np.asarray(palette, np.uint8)
        self.masks, self.raw_ids, self.overlays, self.video = masks, raw_ids, overlays, video
        self.fps, self.alpha, self.show = fps or 30.0, alpha, show
        if show and not display_available():
            raise DeployError("--show needs a display and an OpenCV build with GUI (not opencv-python-headless); "
                              "drop --show or use --save-video")
        self._writer: cv2.VideoWriter | None = None
        self.segment_frames, self._in_segment = max(0, int(segment_frames)), 0
        self.video_paths: list[Path] = []     # every closed video (segment), in order
        self.video_path: Path | None = None   # the video being written, else the last one closed
        self.video_codec: str | None = None   # the fourcc the video was written with
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
                write_atomic(path, encode_image(path, labels))
            else:
                write_palette_png(path, labels, self.palette)
        blended = None
        if self.overlays or self.video or self.show:  # drawn in BGR, what the encoders take
            if frame.bgr is not None:
                blended = overlay(frame.bgr, labels, self.palette[:, ::-1], self.alpha)
            else:
                blended = cv2.cvtColor(overlay(frame.image, labels, self.palette, self.alpha), cv2.COLOR_RGB2BGR)
        if self.overlays:
            path = self.out / "overlays" / f"{frame.name}.jpg"
            write_atomic(path, encode_image(path, blended))
        if self.video:
            if self._writer is None:
                self._open_video(video_name, blended.shape[:2])
            self._writer.write(blended)
            self._in_segment += 1
            if self._in_segment == self.segment_frames:
                self._close_video()
        if self.show:
            cv2.imshow("igldt", blended)
            cv2.waitKey(1)
        self.written += 1

    def _open_video(self, video_name: str, hw: tuple[int, int]) -> None:
        name = f"{video_name}_{len(self.video_paths):03d}" if self.segment_frames else video_name
        self.video_path = self.out / f"{name}.mp4"
        noted = self.video_codec is not None
        self._writer, self.video_codec = open_video_writer(partial_path(self.video_path), self.fps, (hw[1], hw[0]))
        self._in_segment = 0
        if self.video_codec == FALLBACK_FOURCC and not noted:
            self.note(MP4V_NOTE.format(path=self.video_path, h264=self.video_path.with_name(f"{name}_h264.mp4")))

    def _close_video(self) -> None:
        """Finish the video being written (its index is written on release) and give it its final name."""
        self._writer.release()
        self._writer = None
        os.replace(partial_path(self.video_path), self.video_path)
        self.video_paths.append(self.video_path)

    def close(self) -> None:
        if self._writer is not None:
            self._close_video()
        if self.show:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
