"""Small helpers that several test modules use (fixtures live in conftest.py)."""
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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


REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """A script or benchmark of the repository (not a package module) imported from its file, e.g.
    `load_script("scripts/camvid_table.py")`."""
    path = REPO / relative
    if str(path.parent) not in sys.path:  # as when it runs: its own folder first, for its sibling modules
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
