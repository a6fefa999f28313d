"""Small helpers that several test modules use (fixtures live in conftest.py)."""
from pathlib import Path

import cv2
import numpy as np


def video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, decoded by OpenCV (BGR)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames
