"""Transforms: shapes, ignore padding, determinism through the passed Generator."""
from __future__ import annotations

import numpy as np

from igldt.data import IGNORE
from igldt.data import transforms as T


def sample(h: int = 20, w: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(1, 255, (h, w, 3), dtype=np.uint8)
    mask = (np.arange(w)[None, :] % 5).repeat(h, 0).astype(np.uint8)
    return img, mask


def test_weak_shapes_and_ignore_padding():
    img, mask = sample()
    for seed in range(10):
        out, m = T.weak(img, mask, np.random.default_rng(seed), crop=(64, 48), scale=(0.5, 1.0), flip=True)
        assert out.shape == (64, 48, 3) and m.shape == (64, 48) and out.dtype == np.uint8
        # the scaled image is at most 20x30, so the crop must contain padding: 255 in the mask,
        # zeros in the image, and the two agree
        pad = m == IGNORE
        assert pad.any() and (out[pad] == 0).all() and set(np.unique(m[~pad])) <= set(range(5))


def test_weak_mean_padding_and_no_padding_when_large():
    img, mask = sample(100, 120)
    out, m = T.weak(img, mask, np.random.default_rng(0), crop=(32, 32), scale=(1.0, 1.0), flip=False)
    assert IGNORE not in m
    hits = [(y, x) for y in range(69) for x in range(89) if np.array_equal(img[y:y + 32, x:x + 32], out)]
    assert len(hits) == 1 and np.array_equal(mask[hits[0][0]:hits[0][0] + 32, hits[0][1]:hits[0][1] + 32], m)
    small, smask = sample(8, 8)
    out, m = T.weak(small, smask, np.random.default_rng(1), crop=(16, 16), scale=None, flip=False, pad="mean",
                    mean=(0.5, 0.25, 1.0))
    assert (out[m == IGNORE] == [128, 64, 255]).all()


def test_weak_flip_and_scale_are_consistent_between_image_and_mask():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, :5] = 200
    mask = np.zeros((10, 10), np.uint8)
    mask[:, :5] = 1
    flips = 0
    for seed in range(20):
        out, m = T.weak(img, mask, np.random.default_rng(seed), crop=None, scale=(2.0, 2.0), flip=True)
        assert out.shape[:2] == m.shape == (20, 20)
        assert ((out[:, :, 0] > 100) == (m == 1)).all()
        flips += int(m[0, -1] == 1)
    assert 0 < flips < 20  # flipped sometimes, not always


def test_determinism_from_generator():
    img, mask = sample()
    a = T.weak(img, mask, np.random.default_rng(5), crop=(16, 16))
    b = T.weak(img, mask, np.random.default_rng(5), crop=(16, 16))
    c = T.weak(img, mask, np.random.default_rng(6), crop=(16, 16))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))
    s1 = T.strong(img, np.random.default_rng(3))
    s2 = T.strong(img, np.random.default_rng(3))
    assert np.array_equal(s1, s2) and s1.shape == img.shape and s1.dtype == np.uint8
    changed = sum(not np.array_equal(T.strong(img, np.random.default_rng(k)), img) for k in range(10))
    assert changed >= 5  # each of the three ops fires with its own probability


def test_strong_grayscale_and_jitter_range():
    img, _ = sample()
    g = T.strong(img, np.random.default_rng(0), jitter_p=0.0, gray_p=1.0, blur_p=0.0)
    assert (g[:, :, 0] == g[:, :, 1]).all() and (g[:, :, 1] == g[:, :, 2]).all()
    j = T.color_jitter(img, np.random.default_rng(0), brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    assert np.array_equal(j, img)


def test_cutmix_box():
    boxes = [T.cutmix_box(np.random.default_rng(k), 40, 50, p=0.5) for k in range(40)]
    assert all(b.shape == (40, 50) and b.dtype == bool for b in boxes)
    used = [b for b in boxes if b.any()]
    assert 5 < len(used) < 35
    for b in used:  # one axis-aligned rectangle
        ys, xs = np.nonzero(b)
        assert b[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
        assert 0.02 * 2000 * 0.5 <= b.sum() <= 0.4 * 2000 * 1.5
    assert np.array_equal(T.cutmix_box(np.random.default_rng(1), 8, 8), T.cutmix_box(np.random.default_rng(1), 8, 8))


def test_normalize():
    img = np.full((4, 6, 3), 255, np.uint8)
    img[0, 0] = 0
    out = T.normalize(img, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    assert out.shape == (3, 4, 6) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    assert np.allclose(out[:, 1, 1], [1.0, 2.0, 0.5]) and np.allclose(out[:, 0, 0], [-1.0, -2.0, -0.5])
