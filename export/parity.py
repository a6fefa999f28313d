"""Parity of an exported artefact against a reference (usually the .pt it came from) on labelled data.

Torch-free (numpy + the runtime `Predictor`): the reference only pulls torch in when it is a .pt.
One pass over the data runs both backends on the same image, so mIoU per backend, per-class IoU
change, pixel agreement and (when both give logits) the largest absolute logit difference all come
from identical inputs.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from igldt.metrics import ConfusionMatrix, checked_labels, evaluate_predictor, scored_count

# Allowed mIoU drop in points (percent) by precision of the engine under test.
TOLERANCE = {"fp32": 0.05, "fp16": 0.1, "int8": 1.0}


def default_tolerance(predictor) -> float:
    return TOLERANCE.get(str(predictor.meta.get("precision", "fp32")), TOLERANCE["fp32"])


def _labels_and_logits(pred, image, name, want_logits: bool):
    if want_logits:
        logits = pred.predict_logits([image], [name])[0]
        return logits.argmax(0).astype(np.uint8), logits
    return pred.predict([image], [name])[0], None


def _item_name(dataset, i: int) -> str:
    """What an error about item `i` names: its image file where the dataset knows it."""
    return str(dataset.items[i].image) if hasattr(dataset, "items") else f"item {i}"


def compare(engine, reference, dataset, *, limit: int | None = None, tolerance: float | None = None,
            progress: Callable[[int, int], None] | None = None,
            observe: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None] | None = None) -> dict:
    """Score `engine` (and `reference`, a Predictor or None) on `dataset` (load_image/load_mask/classes).
    `observe(i, image, mask, engine_labels)` sees each item (e.g. an `igldt.figures.SampleKeeper`)."""
    classes = list(engine.classes or getattr(dataset, "classes", []))
    n = len(classes)
    if getattr(dataset, "classes", None) and len(dataset.classes) != n:
        raise ValueError(f"{engine.path.name} predicts {n} classes but the dataset has {len(dataset.classes)}; "
                         f"evaluate on the dataset it was trained for")
    if reference is not None and reference.num_classes and reference.num_classes != n:
        raise ValueError(f"reference {reference.path.name} has {reference.num_classes} classes, "
                         f"{engine.path.name} has {n}")
    both_logits = reference is not None and engine.output_kind == "logits" and reference.output_kind == "logits"
    cm_r = ConfusionMatrix(n) if reference is not None else None
    pair = {"same": 0, "pixels": 0, "max_diff": 0.0}
    last = {"next": 0}  # the item being scored and the engine's logits of it, for the reference

    def engine_labels(image):  # called once per item, in index order (metrics.labelled_items)
        i, last["next"] = last["next"], last["next"] + 1
        labels, last["logits"] = _labels_and_logits(engine, image, _item_name(dataset, i), both_logits)
        return labels

    def with_reference(i, image, mask, le):  # the same image through the reference, in the same pass
        if observe is not None:
            observe(i, image, mask, le)
        if reference is None:
            return
        lr, gr = _labels_and_logits(reference, image, _item_name(dataset, i), both_logits)
        cm_r.update(checked_labels(lr, mask, i), mask)
        pair["same"] += int((le == lr).sum())
        pair["pixels"] += le.size
        if both_logits:
            pair["max_diff"] = max(pair["max_diff"], float(np.abs(last["logits"] - gr).max()))

    _, cm_e = evaluate_predictor(engine_labels, dataset, num_classes=n, limit=limit, progress=progress,
                                 observe=with_reference)
    total = scored_count(dataset, limit)
    same, total_px, max_diff = pair["same"], pair["pixels"], pair["max_diff"]
    out = {"images": total, "classes": classes,
           "engine": {"path": str(engine.path), "backend": engine.backend.name,
                      "precision": engine.meta.get("precision"), **cm_e.to_dict(classes)}}
    if reference is None:
        return out
    tol = default_tolerance(engine) if tolerance is None else float(tolerance)
    iou_e, iou_r = cm_e.iou(), cm_r.iou()
    delta_points = 100 * (cm_e.miou() - cm_r.miou())
    out.update({
        "reference": {"path": str(reference.path), "backend": reference.backend.name,
                      "precision": reference.meta.get("precision"), **cm_r.to_dict(classes)},
        "delta_miou_points": delta_points,
        "per_class_delta_points": {c: (None if math.isnan(a) or math.isnan(b) else 100 * (a - b))
                                   for c, a, b in zip(classes, iou_e, iou_r)},
        "pixel_agreement": same / max(total_px, 1),
        "max_abs_logit_diff": max_diff if both_logits else None,
        "tolerance_points": tol,
        # fail on a drop beyond the tolerance; an engine scoring higher is not a failure
        "passed": bool(delta_points >= -tol or math.isnan(delta_points)),
    })
    return out


def engine_miou(predictor, dataset, limit: int | None = None) -> float:
    """mIoU of one runtime `Predictor` on `dataset` (what `igldt benchmark` prints beside latency)."""
    report, _ = evaluate_predictor(lambda image: predictor.predict([image])[0], dataset,
                                   classes=list(predictor.classes or dataset.classes), limit=limit)
    return report["miou"]


def format_report(r: dict) -> str:
    """Per-class IoU of both backends and the change, then the summary lines."""
    classes = r["classes"]
    e = r["engine"]
    ref = r.get("reference")
    w = max([len(c) for c in classes] + [10])

    def pct(v):
        return f"{100 * v:7.2f}" if v is not None else f"{'-':>7}"

    if ref is None:
        lines = [f"{'class':<{w}}  {'IoU':>7}", "-" * (w + 9)]
        lines += [f"{c:<{w}}  {pct(e['iou'][c])}" for c in classes]
        lines += ["-" * (w + 9), f"{'mIoU':<{w}}  {pct(e['miou'])}"]
        return "\n".join(lines)
    lines = [f"{'class':<{w}}  {'engine':>7}  {'ref':>7}  {'change':>7}", "-" * (w + 27)]
    for c in classes:
        d = r["per_class_delta_points"][c]
        lines.append(f"{c:<{w}}  {pct(e['iou'][c])}  {pct(ref['iou'][c])}  "
                     f"{(f'{d:+7.2f}' if d is not None else f'{chr(45):>7}')}")
    lines.append("-" * (w + 27))
    lines.append(f"{'mIoU':<{w}}  {pct(e['miou'])}  {pct(ref['miou'])}  {r['delta_miou_points']:+7.2f}")
    lines.append(f"pixel agreement {100 * r['pixel_agreement']:.3f}%"
                 + (f", max |logit diff| {r['max_abs_logit_diff']:.3g}" if r["max_abs_logit_diff"] is not None else ""))
    verdict = "PASS" if r["passed"] else "FAIL"
    lines.append(f"{verdict}: mIoU change {r['delta_miou_points']:+.3f} points, tolerance {r['tolerance_points']} points")
    return "\n".join(lines)
