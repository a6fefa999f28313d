"""Augmentations in numpy/OpenCV (no torch, no PIL), the UniMatch/CPS recipe.

Every random choice comes from the `np.random.Generator` passed in, so a sample's augmentation
depends only on the seed the loader derives for it (not on worker count or process).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from igldt.constants import IMAGENET_MEAN, IMAGENET_STD

from .base import IGNORE


def _fill_value(pad: str | Sequence[float] | None, mean: Sequence[float]) -> tuple[float, float, float]:
    if pad is None or pad == "zero":
        return (0.0, 0.0, 0.0)
    if pad == "mean":
        return tuple(float(m) * 255.0 for m in mean)  # type: ignore[return-value]
    return tuple(float(v) for v in pad)  # type: ignore[return-value]


def pad_to(img: np.ndarray, mask: np.ndarray | None, h: int, w: int, fill=(0.0, 0.0, 0.0)
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Pad bottom/right to at least h x w: image with `fill`, mask with IGNORE."""
    ih, iw = img.shape[:2]
    ph, pw = max(h - ih, 0), max(w - iw, 0)
    if ph or pw:
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=tuple(round(v) for v in fill))
        if mask is not None:
            mask = cv2.copyMakeBorder(mask, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
    return img, mask


def weak(img: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator,
         crop: Sequence[int] | None = (512, 512), scale: Sequence[float] | None = (0.5, 2.0), flip: bool = True,
         pad: str | Sequence[float] | None = "zero", mean: Sequence[float] = IMAGENET_MEAN,
         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Random scale (relative to the image), random crop with padding, horizontal flip.

    Returns (image uint8 HxWx3, mask uint8 HxW or None). Padding fills images with zeros
    (`pad="zero"`), the dataset mean (`pad="mean"`) or a given RGB triple, and masks with IGNORE
    (255) so the padded area never counts in a loss. For unlabelled images pass an all-zero mask
    to learn where the padding is (255 there), as UniMatch does.
    """
    if scale is not None and tuple(scale) != (1.0, 1.0):
        s = float(rng.uniform(scale[0], scale[1]))
        h, w = img.shape[:2]
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if mask is not None:
            mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
    if crop is not None:
        ch, cw = int(crop[0]), int(crop[1])
        img, mask = pad_to(img, mask, ch, cw, _fill_value(pad, mean))
        h, w = img.shape[:2]
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        img = img[y:y + ch, x:x + cw]
        if mask is not None:
            mask = mask[y:y + ch, x:x + cw]
    if flip and rng.random() < 0.5:
        img = img[:, ::-1]
        if mask is not None:
            mask = mask[:, ::-1]
    img = np.ascontiguousarray(img)
    return img, (None if mask is None else np.ascontiguousarray(mask))


def _blend(a: np.ndarray, b: np.ndarray | float, factor: float) -> np.ndarray:
    return np.clip(b + (a - b) * factor, 0, 255)


def _gray(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness: float = 0.5, contrast: float = 0.5,
                 saturation: float = 0.5, hue: float = 0.25) -> np.ndarray:
    """torchvision ColorJitter semantics (factors in [1-x, 1+x], hue shift in [-hue, hue]), random order."""
    out = img.astype(np.float32)
    for op in rng.permutation(4):
        if op == 0 and brightness:
            out = _blend(out, 0.0, rng.uniform(1 - brightness, 1 + brightness))
        elif op == 1 and contrast:
            out = _blend(out, float(_gray(out).mean()), rng.uniform(1 - contrast, 1 + contrast))
        elif op == 2 and saturation:
            out = _blend(out, _gray(out)[..., None], rng.uniform(1 - saturation, 1 + saturation))
        elif op == 3 and hue:
            shift = rng.uniform(-hue, hue)
            hsv = cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_RGB2HSV_FULL)
            hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(shift * 256))) % 256
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
    return out.round().astype(np.uint8)


def strong(img: np.ndarray, rng: np.random.Generator, jitter_p: float = 0.8, gray_p: float = 0.2,
           blur_p: float = 0.5, blur_sigma: Sequence[float] = (0.1, 2.0)) -> np.ndarray:
    """Photometric perturbation for the student's view: colour jitter, grayscale, Gaussian blur.

    Geometry is untouched, so pixel (y, x) still matches the weak view's pseudo-label.
    """
    if rng.random() < jitter_p:
        img = color_jitter(img, rng)
    if rng.random() < gray_p:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        img = cv2.cvtColor(g, cv2.COLOR_GRAY2RGB)
    if rng.random() < blur_p:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(*blur_sigma)))
    return np.ascontiguousarray(img)


def cutmix_box(rng: np.random.Generator, h: int, w: int, p: float = 0.5, size_min: float = 0.02,
               size_max: float = 0.4, ratio_min: float = 0.3, ratio_max: float = 1 / 0.3) -> np.ndarray:
    """CutMix region (bool HxW, True inside the box); all False with probability 1 - p."""
    box = np.zeros((h, w), bool)
    if rng.random() > p:
        return box
    for _ in range(100):  # rejection-sample a box that fits, as UniMatch does
        area = rng.uniform(size_min, size_max) * h * w
        ratio = rng.uniform(ratio_min, ratio_max)
        bw, bh = int(np.sqrt(area / ratio)), int(np.sqrt(area * ratio))
        if 0 < bw <= w and 0 < bh <= h:
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            box[y:y + bh, x:x + bw] = True
            break
    return box


def normalize(img: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
              ) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW float32, (x/255 - mean) / std with mean/std on the 0..1 scale."""
    m = np.asarray(mean, np.float32) * 255.0
    s = np.asarray(std, np.float32) * 255.0
    out = (img.astype(np.float32) - m) / s
    return np.ascontiguousarray(out.transpose(2, 0, 1))
