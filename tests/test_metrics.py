"""Confusion-matrix metrics against hand-computed values, and the backend-agnostic evaluation loop."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from igldt.metrics import ConfusionMatrix, center_box, evaluate_predictor

I = 255  # ignore


def test_hand_computed_with_ignore_and_absent_class():
    # 4 classes; class 3 appears nowhere (neither gt nor prediction) -> NaN, excluded from mIoU.
    gt = np.array([[0, 0, 1, 1],
                   [2, 2, I, I],
                   [0, 1, 2, I]], np.uint8)
    pr = np.array([[0, 1, 1, 1],
                   [2, 0, 3 - 1, 0],   # the ignore pixels predict anything: 2, 0
                   [0, 1, 1, 2]], np.uint8)
    cm = ConfusionMatrix(4)
    cm.update(pr, gt)
    # counted pixels (gt != 255): 9. matrix[t, p]
    expected = np.zeros((4, 4), np.int64)
    for t, p in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 0), (0, 0), (1, 1), (2, 1)]:
        expected[t, p] += 1
    np.testing.assert_array_equal(cm.matrix, expected)
    # class 0: tp 2, gt 3, pred 3 -> 2/4; class 1: tp 3, gt 3, pred 5 -> 3/5; class 2: tp 1, gt 3, pred 1 -> 1/3
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [2 / 4, 3 / 5, 1 / 3])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((2 / 4 + 3 / 5 + 1 / 3) / 3)
    assert cm.pixel_accuracy() == pytest.approx(6 / 9)


def test_class_only_predicted_counts_as_zero():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 2, 2]), np.array([0, 0, 0]))  # class 2 predicted, never in gt -> IoU 0
    np.testing.assert_allclose(cm.iou(), [1 / 3, np.nan, 0.0])
    assert cm.miou() == pytest.approx((1 / 3 + 0) / 2)


def test_accumulates_merges_and_resets():
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(np.array([0, 1]), np.array([0, 1]))
    b.update(np.array([1, 1]), np.array([0, 1]))
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, [[1, 1], [0, 2]])
    a.merge(b.matrix)
    assert a.matrix.sum() == 6
    a.reset()
    assert a.matrix.sum() == 0 and math.isnan(a.miou()) and math.isnan(a.pixel_accuracy())


def test_rejects_bad_inputs():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ground truth has label 7"):
        cm.update(np.zeros(2), np.array([7, 0]))
    with pytest.raises(ValueError, match="prediction has label"):
        cm.update(np.array([5, 0]), np.array([0, 0]))
    cm.update(np.array([5, 0]), np.array([I, 0]))  # a prediction under an ignore pixel is not checked
    custom = ConfusionMatrix(2, ignore_index=11)
    custom.update(np.array([0, 1]), np.array([11, 1]))
    assert custom.matrix.sum() == 1


def test_table_and_dict():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 1]), np.array([0, 1, 1]))
    text = cm.table(["sky", "road", "car"])
    assert "mIoU" in text and "car" in text and "50.00" in text
    assert text.splitlines()[4].split()[1] == "-"  # car absent: '-' not 0
    d = cm.to_dict(["sky", "road", "car"])
    assert d["iou"] == {"sky": 0.5, "road": 0.5, "car": None} and d["pixels"] == 3
    json.dumps(d, allow_nan=False)
    with pytest.raises(ValueError, match="class names"):
        cm.table(["a"])


def test_center_box():
    assert center_box(10, 20, (4, 6)) == (3, 7, 7, 13)
    assert center_box(10, 20, (40, 6)) == (0, 7, 10, 13)  # crop larger than the image: clipped


class _Fake:
    classes = ["a", "b"]

    def __init__(self):
        rng = np.random.default_rng(0)
        self.masks = [rng.integers(0, 2, (12, 16)).astype(np.uint8) for _ in range(3)]
        self.masks[0][0, :] = I

    def __len__(self):
        return len(self.masks)

    def load_image(self, i):
        return np.repeat(self.masks[i][..., None] * 100, 3, axis=2).astype(np.uint8)

    def load_mask(self, i):
        return self.masks[i]


def test_evaluate_predictor_perfect_and_center_crop():
    ds = _Fake()
    perfect = lambda img: (img[..., 0] // 100).astype(np.uint8)  # noqa: E731 (reads the label back)
    report, cm = evaluate_predictor(perfect, ds)
    assert report["miou"] == 1.0 and report["images"] == 3 and report["pixels"] == 3 * 12 * 16 - 16
    seen = []
    report, _ = evaluate_predictor(lambda img: (seen.append(img.shape), perfect(img))[1], ds,
                                   center_crop=(4, 8), limit=2)
    assert seen == [(4, 8, 3)] * 2 and report["pixels"] == 2 * 32 and report["center_crop"] == [4, 8]
    with pytest.raises(ValueError, match="predictor returned"):
        evaluate_predictor(lambda img: np.zeros((2, 2), np.uint8), ds)
    with pytest.raises(ValueError, match="model predicts 3"):
        evaluate_predictor(perfect, ds, num_classes=3)


def test_metrics_module_does_not_import_torch():
    code = "import sys, igldt.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
