"""What every source yields and shares: the `Frame`, the `Source` interface, and how videos and
streams are opened for decoding (files in sources.py, cameras and streams in live.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass
class Frame:
    image: np.ndarray   # HxWx3 uint8 RGB
    name: str           # file stem, or <source>_<frame index>
    index: int          # position in the source (frames skipped by --vid-stride still count)
    path: str = ""      # the file it came from, when there is one
    bgr: np.ndarray | None = None  # the decoded BGR frame of a video or stream: the video sink draws on it
                                   # without converting `image` back


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
