"""Segmentation metrics (numpy only: the torch-free runtime uses them too).

- `ConfusionMatrix`: accumulated with one `bincount`, IoU / mIoU / pixel accuracy, table, dict.
- `evaluate_predictor(predict, dataset, ...)`: the backend-agnostic evaluation loop. Any engine
  that maps an RGB uint8 image to an HxW label map (torch model, ONNX Runtime, TensorRT) is scored
  the same way; `igldt.evaluate` wraps a torch model into such a callable.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from igldt.constants import IGNORE_INDEX as IGNORE


class MIoU(float):
    """An mIoU that also carries its per-class IoU (`per_class`: class name -> IoU, None where the
    class is absent from ground truth and prediction), so a training log can follow each class."""

    per_class: dict

    def __new__(cls, value: float, per_class: dict):
        obj = super().__new__(cls, value)
        obj.per_class = per_class
        return obj


class ConfusionMatrix:
    """`matrix[t, p]` counts pixels of ground-truth class t predicted as p; ignore pixels skipped.

    IoU of a class absent from both ground truth and prediction is NaN (not 0, not 1) and mIoU is
    the mean over the other classes, so a validation subset without some class is not penalised.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    @classmethod
    def from_counts(cls, counts, ignore_index: int = IGNORE) -> "ConfusionMatrix":
        """A matrix rebuilt from its pixel counts (e.g. a report's `confusion`)."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"confusion counts must be a square matrix, got shape {counts.shape}")
        cm = cls(counts.shape[0], ignore_index)
        cm.merge(counts)
        return cm

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one prediction (labels, any integer dtype) against its ground truth of the same shape."""
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {target.shape}")
        t = target.reshape(-1).astype(np.int64)
        p = pred.reshape(-1).astype(np.int64)
        keep = t != self.ignore_index
        t, p = t[keep], p[keep]
        n = self.num_classes
        if t.size and (t.min() < 0 or t.max() >= n):
            raise ValueError(f"ground truth has label {int(t.max() if t.max() >= n else t.min())} outside "
                             f"0..{n - 1} that is not the ignore value {self.ignore_index}; check the dataset's classes")
        if p.size and (p.min() < 0 or p.max() >= n):
            raise ValueError(f"prediction has label outside 0..{n - 1}; does the model's class count match?")
        self.matrix += np.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix | np.ndarray") -> None:
        """Add another matrix (e.g. from another process after an all-reduce)."""
        self.matrix += other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other, dtype=np.int64)

    def iou(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """Recall per class (NaN for classes absent from the ground truth)."""
        gt = self.matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gt > 0, np.diag(self.matrix) / np.maximum(gt, 1), np.nan)

    def _names(self, classes: Sequence[str] | None) -> list[str]:
        if classes is None:
            return [str(i) for i in range(self.num_classes)]
        if len(classes) != self.num_classes:
            raise ValueError(f"{len(classes)} class names for {self.num_classes} classes")
        return [str(c) for c in classes]

    def table(self, classes: Sequence[str] | None = None) -> str:
        """Per-class IoU / accuracy / pixel share as aligned text; '-' for classes not present."""
        names = self._names(classes)
        iou, acc = self.iou(), self.class_accuracy()
        gt = self.matrix.sum(1)
        total = max(int(gt.sum()), 1)
        w = max([len(n) for n in names] + [5])

        def pct(v: float) -> str:
            return f"{100 * v:6.2f}" if math.isfinite(v) else f"{'-':>6}"

        lines = [f"{'class':<{w}}  {'IoU':>6}  {'acc':>6}  {'pixels':>6}", "-" * (w + 26)]
        for i, name in enumerate(names):
            lines.append(f"{name:<{w}}  {pct(iou[i])}  {pct(acc[i])}  {pct(gt[i] / total)}")
        lines.append("-" * (w + 26))
        lines.append(f"{'mIoU':<{w}}  {pct(self.miou())}")
        lines.append(f"{'pixel acc':<{w}}  {pct(self.pixel_accuracy())}")
        return "\n".join(lines)

    def to_dict(self, classes: Sequence[str] | None = None) -> dict:
        """JSON-ready: fractions in [0, 1]; NaN (class absent) written as None; `confusion` is the
        matrix itself (pixel counts, row = ground truth), so a report can be redrawn or re-scored."""
        names = self._names(classes)

        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {"miou": num(self.miou()), "pixel_accuracy": num(self.pixel_accuracy()),
                "iou": {n: num(v) for n, v in zip(names, self.iou())},
                "accuracy": {n: num(v) for n, v in zip(names, self.class_accuracy())},
                "pixels": int(self.matrix.sum()), "classes": names, "confusion": self.matrix.tolist()}


def center_box(h: int, w: int, crop: Sequence[int]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of the centred `crop` (H, W) window, clipped to an h x w image."""
    ch, cw = min(int(crop[0]), h), min(int(crop[1]), w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return y0, x0, y0 + ch, x0 + cw


def scored_count(dataset: Any, limit: int | None) -> int:
    """How many items an evaluation with `limit` scores: the first `limit`, or all."""
    return len(dataset) if limit is None else min(limit, len(dataset))


def labelled_items(dataset: Any, limit: int | None = None, center_crop: Sequence[int] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(index, image, mask) of the items an evaluation scores, checked (a mask, of the image's size)
    and cut to the centred `center_crop` window when given; `progress(done, total)` after each.
    The one loop behind `evaluate_predictor` and export parity (`igldt.export.parity.compare`)."""
    total = scored_count(dataset, limit)
    for i in range(total):
        image, mask = dataset.load_image(i), dataset.load_mask(i)
        if mask is None:
            raise ValueError(f"item {i} of the dataset has no mask; evaluation needs a labelled split")
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(f"item {i}: image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
        if center_crop is not None:
            y0, x0, y1, x1 = center_box(*mask.shape[:2], center_crop)
            image, mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        yield i, np.ascontiguousarray(image), mask
        if progress is not None:
            progress(i + 1, total)


def checked_labels(labels: Any, mask: np.ndarray, i: int) -> np.ndarray:
    """A predictor's labels for item `i`, refused unless they have the mask's shape."""
    labels = np.asarray(labels)
    if labels.shape != mask.shape:
        raise ValueError(f"item {i}: predictor returned {labels.shape} for a {mask.shape} mask")
    return labels


def evaluate_predictor(predict: Callable[[np.ndarray], np.ndarray], dataset: Any, *,
                       num_classes: int | None = None, classes: Sequence[str] | None = None,
                       center_crop: Sequence[int] | None = None, limit: int | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       observe: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None] | None = None
                       ) -> tuple[dict, ConfusionMatrix]:
    """Score `predict(image HxWx3 uint8 RGB) -> HxW labels` over a labelled dataset.

    `dataset` needs `len()`, `load_image(i)`, `load_mask(i)` (ignore = 255) and `classes`
    (a `SegDataset`). With `center_crop=(H, W)` image and mask are both cut to the centred window
    first (the "center" evaluation mode); whole-image and sliding-window inference are the
    predictor's business. `observe(i, image, mask, labels)` sees each scored item (e.g. an
    `igldt.figures.SampleKeeper`). Returns (report dict, confusion matrix).
    """
    classes = list(classes if classes is not None else getattr(dataset, "classes", []) or [])
    n = num_classes or len(classes)
    if not n:
        raise ValueError("number of classes unknown: pass num_classes or a dataset with classes")
    if classes and len(classes) != n:
        raise ValueError(f"dataset has {len(classes)} classes but the model predicts {n}; wrong dataset or weights?")
    cm = ConfusionMatrix(n, IGNORE)
    start = time.perf_counter()
    for i, image, mask in labelled_items(dataset, limit, center_crop, progress):
        labels = checked_labels(predict(image), mask, i)
        cm.update(labels, mask)
        if observe is not None:
            observe(i, image, mask, labels)
    seconds = time.perf_counter() - start
    report = {**cm.to_dict(classes or None), "images": scored_count(dataset, limit), "seconds": round(seconds, 3),
              "center_crop": list(center_crop) if center_crop is not None else None}
    return report, cm
