"""Synthetic street scenes for the demo dataset: `describe_scene` draws a scene (all its randomness),
`render` paints it (deterministic given a noise rng), `next_frame` moves it on one video frame.

Structure (sky above the horizon, a road in perspective, buildings with windows, textured trees,
cars and people scaled by distance) plus lighting, texture and sensor noise make colour alone a
poor classifier (grey buildings vs grey road vs overcast sky, cars of any colour), so a model
has to use shape and context.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .base import IGNORE

DEMO_CLASSES = ["sky", "building", "road", "sidewalk", "tree", "car", "person"]
DEMO_PALETTE = np.array([(70, 130, 180), (70, 70, 70), (128, 64, 128), (244, 35, 232), (107, 142, 35),
                         (0, 0, 142), (220, 20, 60)], np.uint8)
SKY, BUILDING, ROAD, SIDEWALK, TREE, CAR, PERSON = range(7)


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
        scene["cars"].append(new_car(rng, scene, h, w))
    for _ in range(rng.integers(0, 4)):
        scene["people"].append(_new_person(rng, scene, h, w))
    return scene


def _depth(scene: dict[str, Any], y: float, h: int) -> float:
    return max(0.05, (y - scene["horizon"]) / (h - scene["horizon"]))


def _road_edges(scene: dict[str, Any], y: float, h: int) -> tuple[float, float]:
    half = 0.03 * h + scene["road_half"] * _depth(scene, y, h)
    return scene["vx"] - half, scene["vx"] + half


def new_car(rng: np.random.Generator, scene: dict[str, Any], h: int, w: int) -> dict[str, Any]:
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


@dataclass
class _Canvas:
    """What every layer of `render` paints on: float RGB image, label map and the pixel grid."""
    img: np.ndarray
    lbl: np.ndarray
    yy: np.ndarray
    xx: np.ndarray
    hz: int  # the horizon row

    def put(self, region: np.ndarray, colour: np.ndarray, cls: int) -> None:
        _put(self.img, self.lbl, region, colour, cls)


def render(scene: dict[str, Any], rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a scene: (HxWx3 uint8 RGB image, HxW uint8 label map with IGNORE on object edges).

    Layers are painted back to front; each draws from `rng` in a fixed order, so a seed gives the
    same pixels."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c = _Canvas(np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.uint8), yy, xx, int(round(scene["horizon"])))
    _paint_sky(c, scene, rng)
    _paint_ground(c, scene, rng)
    _paint_buildings(c, scene, rng)
    _paint_trees(c, scene, rng)
    _paint_things(c, scene, rng)
    return _light(c, scene, rng), c.lbl


def _paint_sky(c: _Canvas, scene: dict[str, Any], rng: np.random.Generator) -> None:
    """Vertical gradient with soft clouds above the horizon."""
    h, w = c.lbl.shape
    t = np.clip(c.yy / max(c.hz, 1), 0, 1)[..., None]
    sky = scene["sky_top"] * (1 - t) + scene["sky"] * t + 18 * _lowfreq(rng, h, w, 12)[..., None]
    c.put(c.yy < c.hz, sky, SKY)


def _paint_ground(c: _Canvas, scene: dict[str, Any], rng: np.random.Generator) -> None:
    """Sidewalk with tiles below the horizon, then the road trapezoid with lane dashes."""
    (h, w), yy, xx, hz = c.lbl.shape, c.yy, c.xx, c.hz
    walk = scene["walk"] + 10 * _lowfreq(rng, h, w, 4)[..., None]
    tiles = ((xx.astype(int) % 9 == 0) | (yy.astype(int) % 6 == 0))[..., None]
    walk = np.where(tiles, walk * 0.8, walk)
    c.put(yy >= hz, walk, SIDEWALK)
    top_l, top_r = _road_edges(scene, hz, h)
    bot_l, bot_r = _road_edges(scene, h - 1, h)
    poly = np.array([[top_l, hz], [top_r, hz], [bot_r, h - 1], [bot_l, h - 1]], np.int32)
    road_mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(road_mask, [poly], 1)
    road = scene["road"] + 8 * rng.standard_normal((h, w, 1)).astype(np.float32) + 10 * _lowfreq(rng, h, w, 16)[..., None]
    if scene["lane"]:
        lane = (np.abs(xx - scene["vx"]) < 0.6 + 1.5 * np.clip((yy - hz) / (h - hz), 0, 1)) & ((yy.astype(int) // 5) % 2 == 0)
        road = np.where(lane[..., None], np.float32(225), road)
    c.put(road_mask.astype(bool) & (yy >= hz), road, ROAD)


def _paint_buildings(c: _Canvas, scene: dict[str, Any], rng: np.random.Generator) -> None:
    """Buildings along the horizon, windows in a grid."""
    (h, w), yy, xx = c.lbl.shape, c.yy, c.xx
    for b in scene["buildings"]:
        x0, x1 = int(max(b["x0"], 0)), int(min(b["x1"], w))
        top, bottom = int(b["top"]), c.hz + 2
        if x1 <= x0:
            continue
        region = (xx >= x0) & (xx < x1) & (yy >= top) & (yy < bottom)
        face = b["colour"] + 9 * _lowfreq(rng, h, w, 6)[..., None]
        period = b["gap"] + b["win_w"]
        win = (((xx - x0).astype(int) % period) < b["win_w"]) & (((yy - top).astype(int) % (b["win_h"] + 3)) < b["win_h"])
        win &= (yy > top + 2) & (yy < bottom - 4)
        face = np.where(win[..., None], b["win"], face)
        c.put(region, face, BUILDING)


def _paint_trees(c: _Canvas, scene: dict[str, Any], rng: np.random.Generator) -> None:
    """Blobby crowns with leafy texture and a trunk."""
    (h, w), yy, xx = c.lbl.shape, c.yy, c.xx
    for tr in scene["trees"]:
        r, cx = tr["r"], tr["cx"]
        cy = tr["base"] - 2.2 * r
        trunk = (np.abs(xx - cx) < max(1.0, r * 0.15)) & (yy >= cy) & (yy < tr["base"])
        c.put(trunk, np.array([90, 60, 40], np.float32), TREE)
        crown = np.zeros((h, w), bool)
        for dx, dy, dr in tr["blobs"]:
            crown |= (xx - cx - dx * r * 0.6) ** 2 + (yy - cy - dy * r * 0.5) ** 2 < (r * (0.75 + 0.25 * dr)) ** 2
        leaves = tr["colour"] * (1 + 0.35 * _lowfreq(rng, h, w, 2)[..., None])
        c.put(crown, leaves, TREE)


def _paint_things(c: _Canvas, scene: dict[str, Any], rng: np.random.Generator) -> None:
    """Cars and people, far to near; an ambiguous rim around near ones is ignored, as VOC does."""
    h = c.lbl.shape[0]
    things = [("car", o) for o in scene["cars"]] + [("person", o) for o in scene["people"]]
    for kind, o in sorted(things, key=lambda k: k[1]["y"]):
        s = _depth(scene, o["y"], h) * 0.3 * h
        obj = _paint_car(c, o, s, rng) if kind == "car" else _paint_person(c, o, s)
        if s > 6 and obj.any():
            u8 = obj.astype(np.uint8)
            kernel = np.ones((3, 3), np.uint8)
            c.lbl[cv2.dilate(u8, kernel) != cv2.erode(u8, kernel)] = IGNORE


def _paint_car(c: _Canvas, o: dict[str, Any], s: float, rng: np.random.Generator) -> np.ndarray:
    """Body, cabin with glass and two wheels at scale `s`; returns the car's pixels."""
    (h, w), yy, xx = c.lbl.shape, c.yy, c.xx
    cw, ch = s * o["len"], s * 0.55
    x0, y1 = o["x"] - cw / 2, o["y"]
    body = (xx >= x0) & (xx < x0 + cw) & (yy >= y1 - ch) & (yy < y1 - ch * 0.2)
    cabin = (xx >= x0 + cw * 0.2) & (xx < x0 + cw * 0.8) & (yy >= y1 - ch * 1.45) & (yy < y1 - ch)
    glass = (xx >= x0 + cw * 0.25) & (xx < x0 + cw * 0.75) & (yy >= y1 - ch * 1.35) & (yy < y1 - ch)
    wheels = np.zeros((h, w), bool)
    for fx in (0.22, 0.78):
        wheels |= (xx - (x0 + cw * fx)) ** 2 + (yy - (y1 - ch * 0.22)) ** 2 < (ch * 0.28) ** 2
    shine = o["colour"] * (1 + 0.15 * _lowfreq(rng, h, w, 3)[..., None])
    c.put(body | cabin, shine, CAR)
    c.put(glass, np.array([40, 50, 65], np.float32), CAR)
    c.put(wheels, np.array([20, 20, 20], np.float32), CAR)
    return body | cabin | wheels


def _paint_person(c: _Canvas, o: dict[str, Any], s: float) -> np.ndarray:
    """Legs, torso and head at scale `s`; returns the person's pixels."""
    yy, xx = c.yy, c.xx
    ph = s * 1.1
    legs = (np.abs(xx - o["x"]) < ph * 0.1) & (yy >= o["y"] - ph * 0.45) & (yy < o["y"])
    torso = (((xx - o["x"]) / (ph * 0.14)) ** 2 + ((yy - (o["y"] - ph * 0.62)) / (ph * 0.2)) ** 2) < 1
    head = (xx - o["x"]) ** 2 + (yy - (o["y"] - ph * 0.9)) ** 2 < (ph * 0.09) ** 2
    c.put(legs, o["legs"], PERSON)
    c.put(torso, o["shirt"], PERSON)
    c.put(head, o["skin"], PERSON)
    return legs | torso | head


def _light(c: _Canvas, scene: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Global gain, a linear shade across the frame, sensor noise, optional defocus -> uint8 RGB."""
    h, w = c.lbl.shape
    shade = 1 + scene["shade"][0] * (c.xx / w - 0.5) + scene["shade"][1] * (c.yy / h - 0.5)
    img = c.img * scene["gain"] * shade[..., None] + rng.normal(0, scene["noise"], c.img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if scene["blur"]:
        img = cv2.GaussianBlur(img, (3, 3), 0.8)
    return img


def next_frame(scene: dict[str, Any], h: int, w: int) -> None:
    """Advance moving objects one video frame (wrapping around the frame edges)."""
    for o in scene["cars"] + scene["people"]:
        o["x"] = (o["x"] + o["v"] * (0.4 + _depth(scene, o["y"], h)) + 0.2 * w) % (1.4 * w) - 0.2 * w
