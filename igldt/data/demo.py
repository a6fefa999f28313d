"""The embedded demo dataset: synthetic street scenes (`scenes.py`) generated from a seed (no download),
small enough for CPU minutes, hard enough to show learning.

Layout is the `FolderDataset` format: `images/{train,val}/`, `masks/{train,val}/`, `classes.yaml`,
`splits/labeled.txt` + `splits/unlabeled.txt` (over train), `demo.mp4` and `manifest.json`.
Generation happens in a temporary sibling folder renamed into place, so a crash never leaves a
half-written dataset, and a complete one (same seed and parameters) is reused as is.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .base import IGNORE
from .datasets import DEMO_MANIFEST
from .errors import DataError
from .folder import write_classes_yaml
from .scenes import DEMO_CLASSES, DEMO_PALETTE, describe_scene, new_car, next_frame, render
from .splits import make_split, write_split

DEMO_VERSION = 2  # 2: labelled scenes cover clear days only (see `scenes.describe_scene`)
MANIFEST = DEMO_MANIFEST
VIDEO = "demo.mp4"


# ---------------------------------------------------------------------------------------------
# writing the dataset

def _params(seed: int, n_labelled_train: int, n_unlabelled_train: int, n_val: int, size: tuple[int, int],
            video_frames: int) -> dict[str, Any]:
    return {"seed": int(seed), "n_labelled_train": int(n_labelled_train), "n_unlabelled_train": int(n_unlabelled_train),
            "n_val": int(n_val), "size": [int(size[0]), int(size[1])], "video_frames": int(video_frames)}


def _complete(root: Path, manifest: dict[str, Any]) -> bool:
    for split, n in manifest["counts"].items():
        for sub in ("images", "masks"):
            folder = root / sub / split
            if not folder.is_dir() or sum(1 for _ in folder.glob("*.png")) != n:
                return False
    need = [root / "classes.yaml", root / "splits" / "labeled.txt", root / "splits" / "unlabeled.txt"]
    if manifest["params"]["video_frames"]:
        need.append(root / VIDEO)
    return all(p.is_file() for p in need)


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return m if isinstance(m, dict) and m.get("format") == "igldt-demo" else None


def _generate(tmp: Path, p: dict[str, Any]) -> dict[str, Any]:
    h, w = p["size"]
    seed = p["seed"]
    counts = {"train": p["n_labelled_train"] + p["n_unlabelled_train"], "val": p["n_val"]}
    ids = {split: [f"{split}_{i:04d}" for i in range(n)] for split, n in counts.items()}
    labelled, unlabelled = make_split(ids["train"], count=p["n_labelled_train"], seed=seed)
    clear = set(labelled)
    for code, split in enumerate(counts):
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "masks" / split).mkdir(parents=True)
        for i, name in enumerate(ids[split]):
            rng = np.random.default_rng([seed, code, i])  # one stream per image: stable under n changes
            scene = describe_scene(rng, h, w, "clear" if name in clear else "any")
            img, lbl = render(scene, rng, h, w)
            cv2.imwrite(str(tmp / "images" / split / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(tmp / "masks" / split / f"{name}.png"), lbl)
    write_classes_yaml(tmp / "classes.yaml", DEMO_CLASSES, DEMO_PALETTE, IGNORE)
    write_split(tmp / "splits", labelled, unlabelled)
    if p["video_frames"]:
        rng = np.random.default_rng([seed, 99])
        scene = describe_scene(rng, h, w)
        while len(scene["cars"]) < 2:
            scene["cars"].append(new_car(rng, scene, h, w))
        writer = cv2.VideoWriter(str(tmp / VIDEO), cv2.VideoWriter_fourcc(*"mp4v"), 12, (w, h))
        if not writer.isOpened():
            raise DataError("OpenCV cannot write mp4 (mp4v) here; install opencv-python-headless with FFmpeg")
        for _ in range(p["video_frames"]):
            img, _lbl = render(scene, rng, h, w)
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            next_frame(scene, h, w)
        writer.release()
    return counts


def demo_images(n: int, size: tuple[int, int] = (96, 128), seed: int = 0) -> list[np.ndarray]:
    """The first `n` demo val scenes (RGB uint8), rendered in memory: pixel for pixel the val images
    `make_demo_dataset(seed=seed, size=size)` writes, with nothing written."""
    h, w = size
    images = []
    for i in range(n):
        rng = np.random.default_rng([seed, 1, i])  # the val stream of `_generate` (split code 1)
        images.append(render(describe_scene(rng, h, w), rng, h, w)[0])
    return images


def make_demo_dataset(root: str | Path, seed: int = 0, n_labelled_train: int = 16, n_unlabelled_train: int = 48,
                      n_val: int = 24, size: tuple[int, int] = (96, 128), video_frames: int = 48) -> Path:
    """Generate (or reuse) the demo dataset at `root`; returns `root`.

    Defaults: 64 train images (16 labelled by `splits/labeled.txt`, the same 16 that
    `make_split(fraction=1/4, seed=0)` picks, all of them clear-day scenes; the 48 others and the
    val images in any weather and light; all train masks are written so pseudo-labels can be
    scored), 24 val images, 96x128, and a 48-frame `demo.mp4`. Takes about a second.
    """
    root = Path(root).expanduser()
    params = _params(seed, n_labelled_train, n_unlabelled_train, n_val, size, video_frames)
    if min(params["n_labelled_train"], params["n_val"]) < 1 or params["n_unlabelled_train"] < 0:
        raise DataError("demo dataset needs at least 1 labelled train image and 1 val image")
    existing = _read_manifest(root)
    if existing is not None:
        if existing.get("version") != DEMO_VERSION or existing.get("params") != params:
            raise DataError(f"{root} holds a demo dataset made with other settings ({existing.get('params')}); "
                            "delete it or choose another folder")
        if not _complete(root, existing):
            raise DataError(f"demo dataset {root} is incomplete (files were removed); delete the folder to regenerate")
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"{root} exists and is not a demo dataset; choose an empty or new folder for it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        counts = _generate(tmp, params)
        manifest = {"format": "igldt-demo", "version": DEMO_VERSION, "params": params, "counts": counts,
                    "classes": DEMO_CLASSES}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if root.is_dir():
            root.rmdir()  # empty placeholder (checked above); a race refills it -> OSError below
        os.rename(tmp, root)
    except OSError:
        other = _read_manifest(root)  # another process (e.g. a DDP rank) finished first
        if other is None or other.get("params") != params or not _complete(root, other):
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure_demo_dataset(root: str | Path) -> Path:
    """The demo dataset at `root`, generated with default settings unless one is already there."""
    root = Path(root).expanduser()
    manifest = _read_manifest(root)
    if manifest is not None:
        if not _complete(root, manifest):
            raise DataError(f"demo dataset {root} is incomplete (files were removed); delete the folder to regenerate")
        return root
    return make_demo_dataset(root)
