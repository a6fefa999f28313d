"""The embedded demo dataset: synthetic street scenes generated from a seed (no download).

Structure (sky above the horizon, a road in perspective, buildings with windows, textured trees,
cars and people scaled by distance) plus lighting, texture and sensor noise make colour alone a
poor classifier (grey buildings vs grey road vs overcast sky, cars of any colour), so a model
has to use shape and context: small enough for CPU minutes, hard enough to show learning.

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
from .splits import make_split, write_split

DEMO_VERSION = 2  # 2: labelled scenes cover clear days only (see `describe_scene`)
MANIFEST = DEMO_MANIFEST
VIDEO = "demo.mp4"
DEMO_CLASSES = ["sky", "building", "road", "sidewalk", "tree", "car", "person"]
DEMO_PALETTE = np.array([(70, 130, 180), (70, 70, 70), (128, 64, 128), (244, 35, 232), (107, 142, 35),
                         (0, 0, 142), (220, 20, 60)], np.uint8)
SKY, BUILDING, ROAD, SIDEWALK, TREE, CAR, PERSON = range(7)


# ---------------------------------------------------------------------------------------------
# scene description (all randomness here) and rendering (deterministic given a noise rng)

def _lowfreq(rng: np.random.Generator, h: int, w: int, cell: int = 8) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a coarse Gaussian grid upsampled bicubically."""
    g = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) * 0.7


def _colour(rng: np.random.Generator, base: tuple[int, int, int], spread: float) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.normal(0, spread, 3), 0, 255)


# Weather and light of a scene: the labelled images are all "clear" (blue sky, daylight); unlabelled
# and val images come in every condition. The unlabelled part then carries what the labels lack
# (overcast skies as grey as buildings, sunsets, dim light), which is the situation semi-supervised
# learning is for; with labels covering everything, a pretrained Sup-only network leaves it no room.
CONDITIONS = ("clear", "any")


def describe_scene(rng: np.random.Generator, h: int, w: int, condition: str = "any") -> dict[str, Any]:
    """Random layout and appearance of one street scene (no pixels yet); `condition` "clear" keeps
    to a blue sky in daylight, "any" draws blue, overcast or sunset skies under any light."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got '{condition}'")
    horizon = rng.uniform(0.36, 0.5) * h
    sky_kind = rng.integers(3) if condition == "any" else 0
    sky = [(95, 150, 215), (170, 172, 178), (215, 160, 120)][sky_kind]
    scene: dict[str, Any] = {
        "horizon": horizon, "vx": rng.uniform(0.35, 0.65) * w, "road_half": rng.uniform(0.3, 0.5) * w,
        "sky": _colour(rng, sky, 12), "sky_top": _colour(rng, (40, 80, 160) if sky_kind == 0 else sky, 15),
        "road": _colour(rng, (rng.uniform(60, 140),) * 3, 5), "walk": _colour(rng, rng.choice([(170, 160, 140), (150, 120, 110), (130, 130, 135)]), 12),
        "lane": rng.random() < 0.7, "buildings": [], "trees": [], "cars": [], "people": [],
        "gain": rng.uniform(0.7, 1.25) if condition == "any" else rng.uniform(1.0, 1.25), "shade": rng.uniform(-0.25, 0.25, 2), "noise": rng.uniform(3, 9),
        "blur": rng.random() < 0.3,
    }
    x = -rng.uniform(0, 0.1) * w
    while x < w:  # a skyline of buildings along the horizon
        bw = rng.uniform(0.12, 0.3) * w
        if rng.random() < 0.8:
            grey = rng.random() < 0.4
            base = (110, 110, 112) if grey else tuple(rng.choice([(150, 90, 70), (185, 170, 140), (120, 100, 90), (160, 150, 160)]))
            scene["buildings"].append({
                "x0": x, "x1": x + bw, "top": rng.uniform(0.05, horizon / h - 0.05) * h,
                "colour": _colour(rng, base, 15), "win": _colour(rng, (50, 60, 80), 20),
                "win_w": rng.integers(2, 5), "win_h": rng.integers(3, 6), "gap": rng.integers(3, 6)})
        x += bw + rng.uniform(0, 0.04) * w
    for _ in range(rng.integers(1, 4)):
        side = rng.choice([-1, 1])
        cx = scene["vx"] + side * rng.uniform(0.3, 0.55) * w
        scene["trees"].append({"cx": cx, "base": horizon + rng.uniform(0.05, 0.2) * h,
                               "r": rng.uniform(0.07, 0.14) * h, "colour": _colour(rng, (60, 110, 45), 20),
                               "blobs": rng.uniform(-1, 1, (5, 3))})
    for _ in range(rng.integers(0, 4)):
        scene["cars"].append(_new_car(rng, scene, h, w))
    for _ in range(rng.integers(0, 4)):
        scene["people"].append(_new_person(rng, scene, h, w))
    return scene


def _depth(scene: dict[str, Any], y: float, h: int) -> float:
    return max(0.05, (y - scene["horizon"]) / (h - scene["horizon"]))


def _road_edges(scene: dict[str, Any], y: float, h: int) -> tuple[float, float]:
    half = 0.03 * h + scene["road_half"] * _depth(scene, y, h)
    return scene["vx"] - half, scene["vx"] + half


def _new_car(rng: np.random.Generator, scene: dict[str, Any], h: int, w: int) -> dict[str, Any]:
    y = scene["horizon"] + rng.uniform(0.15, 0.95) * (h - scene["horizon"])
    left, right = _road_edges(scene, y, h)
    kind = rng.integers(4)
    body = [rng.uniform(0, 255, 3), _colour(rng, (200, 200, 205), 15), _colour(rng, (30, 30, 35), 10),
            _colour(rng, (100, 100, 105), 15)][kind]
    return {"x": rng.uniform(left, right), "y": y, "colour": np.asarray(body, np.float32),
            "len": rng.uniform(1.6, 2.4), "v": rng.uniform(-2.5, 2.5)}


def _new_person(rng: np.random.Generator, scene: dict[str, Any], h: int, w: int) -> dict[str, Any]:
    y = scene["horizon"] + rng.uniform(0.1, 0.9) * (h - scene["horizon"])
    left, right = _road_edges(scene, y, h)
    x = left - rng.uniform(0.02, 0.25) * w if rng.random() < 0.5 else right + rng.uniform(0.02, 0.25) * w
    return {"x": x, "y": y, "shirt": rng.uniform(0, 255, 3).astype(np.float32),
            "legs": _colour(rng, (50, 50, 70), 20), "skin": _colour(rng, (200, 160, 130), 30),
            "v": rng.uniform(-0.8, 0.8)}


def _put(img: np.ndarray, lbl: np.ndarray, region: np.ndarray, colour: np.ndarray, cls: int) -> None:
    img[region] = colour if np.ndim(colour) == 1 else colour[region]
    lbl[region] = cls


def render(scene: dict[str, Any], rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a scene: (HxWx3 uint8 RGB image, HxW uint8 label map with IGNORE on object edges)."""
    img = np.zeros((h, w, 3), np.float32)
    lbl = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    hz = int(round(scene["horizon"]))
    # sky: vertical gradient with soft clouds
    t = np.clip(yy / max(hz, 1), 0, 1)[..., None]
    sky = scene["sky_top"] * (1 - t) + scene["sky"] * t + 18 * _lowfreq(rng, h, w, 12)[..., None]
    _put(img, lbl, yy < hz, sky, SKY)
    # ground: sidewalk with tiles, then the road trapezoid with lane dashes
    walk = scene["walk"] + 10 * _lowfreq(rng, h, w, 4)[..., None]
    tiles = ((xx.astype(int) % 9 == 0) | (yy.astype(int) % 6 == 0))[..., None]
    walk = np.where(tiles, walk * 0.8, walk)
    _put(img, lbl, yy >= hz, walk, SIDEWALK)
    top_l, top_r = _road_edges(scene, hz, h)
    bot_l, bot_r = _road_edges(scene, h - 1, h)
    poly = np.array([[top_l, hz], [top_r, hz], [bot_r, h - 1], [bot_l, h - 1]], np.int32)
    road_mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(road_mask, [poly], 1)
    road = scene["road"] + 8 * rng.standard_normal((h, w, 1)).astype(np.float32) + 10 * _lowfreq(rng, h, w, 16)[..., None]
    if scene["lane"]:
        lane = (np.abs(xx - scene["vx"]) < 0.6 + 1.5 * np.clip((yy - hz) / (h - hz), 0, 1)) & ((yy.astype(int) // 5) % 2 == 0)
        road = np.where(lane[..., None], np.float32(225), road)
    _put(img, lbl, road_mask.astype(bool) & (yy >= hz), road, ROAD)
    # buildings along the horizon, windows in a grid
    for b in scene["buildings"]:
        x0, x1 = int(max(b["x0"], 0)), int(min(b["x1"], w))
        top, bottom = int(b["top"]), hz + 2
        if x1 <= x0:
            continue
        region = (xx >= x0) & (xx < x1) & (yy >= top) & (yy < bottom)
        face = b["colour"] + 9 * _lowfreq(rng, h, w, 6)[..., None]
        period = b["gap"] + b["win_w"]
        win = (((xx - x0).astype(int) % period) < b["win_w"]) & (((yy - top).astype(int) % (b["win_h"] + 3)) < b["win_h"])
        win &= (yy > top + 2) & (yy < bottom - 4)
        face = np.where(win[..., None], b["win"], face)
        _put(img, lbl, region, face, BUILDING)
    # trees: blobby crowns with leafy texture and a trunk
    for tr in scene["trees"]:
        r, cx = tr["r"], tr["cx"]
        cy = tr["base"] - 2.2 * r
        trunk = (np.abs(xx - cx) < max(1.0, r * 0.15)) & (yy >= cy) & (yy < tr["base"])
        _put(img, lbl, trunk, np.array([90, 60, 40], np.float32), TREE)
        crown = np.zeros((h, w), bool)
        for dx, dy, dr in tr["blobs"]:
            crown |= (xx - cx - dx * r * 0.6) ** 2 + (yy - cy - dy * r * 0.5) ** 2 < (r * (0.75 + 0.25 * dr)) ** 2
        leaves = tr["colour"] * (1 + 0.35 * _lowfreq(rng, h, w, 2)[..., None])
        _put(img, lbl, crown, leaves, TREE)
    # cars and people, far to near
    things = [("car", c) for c in scene["cars"]] + [("person", p) for p in scene["people"]]
    for kind, o in sorted(things, key=lambda k: k[1]["y"]):
        s = _depth(scene, o["y"], h) * 0.3 * h
        obj = np.zeros((h, w), bool)
        if kind == "car":
            cw, ch = s * o["len"], s * 0.55
            x0, y1 = o["x"] - cw / 2, o["y"]
            body = (xx >= x0) & (xx < x0 + cw) & (yy >= y1 - ch) & (yy < y1 - ch * 0.2)
            cabin = (xx >= x0 + cw * 0.2) & (xx < x0 + cw * 0.8) & (yy >= y1 - ch * 1.45) & (yy < y1 - ch)
            glass = (xx >= x0 + cw * 0.25) & (xx < x0 + cw * 0.75) & (yy >= y1 - ch * 1.35) & (yy < y1 - ch)
            wheels = np.zeros((h, w), bool)
            for fx in (0.22, 0.78):
                wheels |= (xx - (x0 + cw * fx)) ** 2 + (yy - (y1 - ch * 0.22)) ** 2 < (ch * 0.28) ** 2
            obj = body | cabin | wheels
            shine = o["colour"] * (1 + 0.15 * _lowfreq(rng, h, w, 3)[..., None])
            _put(img, lbl, body | cabin, shine, CAR)
            _put(img, lbl, glass, np.array([40, 50, 65], np.float32), CAR)
            _put(img, lbl, wheels, np.array([20, 20, 20], np.float32), CAR)
        else:
            ph = s * 1.1
            legs = (np.abs(xx - o["x"]) < ph * 0.1) & (yy >= o["y"] - ph * 0.45) & (yy < o["y"])
            torso = (((xx - o["x"]) / (ph * 0.14)) ** 2 + ((yy - (o["y"] - ph * 0.62)) / (ph * 0.2)) ** 2) < 1
            head = (xx - o["x"]) ** 2 + (yy - (o["y"] - ph * 0.9)) ** 2 < (ph * 0.09) ** 2
            obj = legs | torso | head
            _put(img, lbl, legs, o["legs"], PERSON)
            _put(img, lbl, torso, o["shirt"], PERSON)
            _put(img, lbl, head, o["skin"], PERSON)
        if s > 6 and obj.any():  # an ambiguous rim around near objects is ignored, as VOC does
            u8 = obj.astype(np.uint8)
            kernel = np.ones((3, 3), np.uint8)
            lbl[cv2.dilate(u8, kernel) != cv2.erode(u8, kernel)] = IGNORE
    # lighting: global gain, a linear shade across the frame, sensor noise, optional defocus
    shade = 1 + scene["shade"][0] * (xx / w - 0.5) + scene["shade"][1] * (yy / h - 0.5)
    img = img * scene["gain"] * shade[..., None] + rng.normal(0, scene["noise"], img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if scene["blur"]:
        img = cv2.GaussianBlur(img, (3, 3), 0.8)
    return img, lbl


def _step(scene: dict[str, Any], h: int, w: int) -> None:
    """Advance moving objects one video frame (wrapping around the frame edges)."""
    for o in scene["cars"] + scene["people"]:
        o["x"] = (o["x"] + o["v"] * (0.4 + _depth(scene, o["y"], h)) + 0.2 * w) % (1.4 * w) - 0.2 * w


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
            scene["cars"].append(_new_car(rng, scene, h, w))
        writer = cv2.VideoWriter(str(tmp / VIDEO), cv2.VideoWriter_fourcc(*"mp4v"), 12, (w, h))
        if not writer.isOpened():
            raise DataError("OpenCV cannot write mp4 (mp4v) here; install opencv-python-headless with FFmpeg")
        for _ in range(p["video_frames"]):
            img, _lbl = render(scene, rng, h, w)
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            _step(scene, h, w)
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
