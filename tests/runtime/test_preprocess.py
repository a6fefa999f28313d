"""The runtime's pre- and post-processing against their plain definitions."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from igldt.palette import colorize, voc_palette
from igldt.runtime.preprocess import normalize_batch, resize_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_normalize_batch_is_the_formula_zero_padded():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (37, 50, 3), dtype=np.uint8) for _ in range(2)]
    out = normalize_batch(imgs, MEAN, STD, (64, 64))
    m, s = np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)
    for i, img in enumerate(imgs):
        ref = ((img.astype(np.float32) / 255 - m) / s).transpose(2, 0, 1)
        np.testing.assert_allclose(out[i, :, :37, :50], ref, atol=2e-6)
    assert out.dtype == np.float32 and not out[:, :, 37:].any() and not out[:, :, :, 50:].any()


@pytest.mark.parametrize("size, interpolation", [((224, 320), cv2.INTER_LINEAR),   # down by < 2x: bilinear
                                                 ((90, 240), cv2.INTER_AREA),      # by > 2x in one side: area
                                                 ((720, 960), cv2.INTER_LINEAR)])  # up: bilinear
def test_resize_image_averages_only_when_shrinking_more_than_2x(size, interpolation):
    img = np.random.default_rng(1).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    expected = cv2.resize(img, (size[1], size[0]), interpolation=interpolation)
    np.testing.assert_array_equal(resize_image(img, size), expected)
    assert resize_image(img, (360, 480)) is img


def test_colorize_is_a_palette_lookup_with_black_beyond_it():
    labels = np.random.default_rng(2).integers(0, 256, (31, 45)).astype(np.uint8)
    labels[0, 0] = 255
    pal = voc_palette(12)
    lut = np.zeros((256, 3), np.uint8)
    lut[:12] = pal
    np.testing.assert_array_equal(colorize(labels, pal), lut[labels])
    assert not colorize(labels, pal)[0, 0].any()
