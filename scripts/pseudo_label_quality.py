#!/usr/bin/env python
"""How good are the pseudo-labels a student learns from? Per-class IoU and pixel share of the teachers'
hard labels (and of any student or Sup-only checkpoint) on the training pools, against ground truth.

CamVid's "unlabelled" images do have masks, so the labels the student is taught on them can be scored
directly: that is the ceiling of the pseudo-label terms (7) and (12), class by class.

    python scripts/pseudo_label_quality.py runs/exp/teach_l0_1200/best.pt --data ../shared/data/camvid \
        [--also runs/exp/sup_warm100/best.pt ...] [--limit 100] [--by-sequence]

With --confidence T [T ...] each model's pixels are also split by its own confidence (max softmax):
the share of the pool's labelled pixels at or above T (what a threshold of T keeps), the accuracy of
those, and the share of all pixels that are confidently wrong (what a threshold of T lets through as
errors): the figures behind a confidence threshold of CPS or UniMatch. `-o key=value` sets the split as a
training run would (`-o data.fraction=0.03125` for the 1/32 pools).

With --by-sequence each pool is also scored per recording: CamVid's val split is one recording
(0016E5), the train pools hold three (0001TP, 0006R0, 0016E5), so the other two show whether what a
model learned carries beyond the val recording.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from igldt.checkpoint import load_model, load_teachers
from igldt.config import load_config
from igldt.constants import IGNORE_INDEX
from igldt.data import build_dataset
from igldt.data.loaders import train_datasets
from igldt.metrics import ConfusionMatrix
from igldt.runtime.preprocess import padded_size


def probabilities(model, image: np.ndarray, mean, std, stride: int, flip: bool = False) -> torch.Tensor:
    """Softmax of one whole image (padded to the stride, cut back), 1 x C x H x W; with `flip`, averaged
    with the softmax of the mirrored image, mirrored back."""
    h, w = image.shape[:2]
    ph, pw = padded_size(h, w, stride)

    def softmax_of(view: np.ndarray) -> torch.Tensor:  # padded on the right and bottom alike for both views
        x = (torch.from_numpy(np.ascontiguousarray(view)).float().permute(2, 0, 1)[None] / 255 - mean) / std
        return model(F.pad(x, (0, pw - w, 0, ph - h)))["logits"][..., :h, :w].softmax(1)

    p = softmax_of(image)
    return (p + softmax_of(image[:, ::-1]).flip(-1)) / 2 if flip else p


class Confidence:
    """Per threshold T: labelled pixels whose confidence is >= T, how many of those are right, and per
    ground-truth class how many of its pixels are kept and wrong (what a threshold teaches against it)."""

    def __init__(self, thresholds, classes: int = 0):
        self.t = np.asarray(thresholds, dtype=np.float64)
        self.total, self.kept, self.right = 0, np.zeros(len(self.t)), np.zeros(len(self.t))
        self.class_pixels = np.zeros(classes)
        self.class_wrong = np.zeros((len(self.t), classes))

    def update(self, p: torch.Tensor, mask: np.ndarray) -> None:
        conf, pred = (v.numpy() for v in p[0].max(0))
        known = mask != IGNORE_INDEX
        conf, correct, truth = conf[known], pred[known] == mask[known], mask[known].astype(np.int64)
        self.total += int(known.sum())
        n = len(self.class_pixels)
        if n:
            self.class_pixels += np.bincount(truth, minlength=n)[:n]
        for j, t in enumerate(self.t):
            sure = conf >= t
            self.kept[j] += int(sure.sum())
            self.right[j] += int((sure & correct).sum())
            if n:
                self.class_wrong[j] += np.bincount(truth[sure & ~correct], minlength=n)[:n]

    def summary(self, classes=()) -> dict:
        total = max(self.total, 1)
        out = {}
        for j, (t, k, r) in enumerate(zip(self.t, self.kept, self.right)):
            out[f"{t:g}"] = {"kept": k / total, "accuracy_kept": r / max(k, 1), "confidently_wrong": (k - r) / total}
            if len(classes):  # per ground-truth class: the share of its pixels taught confidently as another
                out[f"{t:g}"]["confidently_wrong_by_class"] = {
                    c: float(w / max(px, 1)) for c, w, px in zip(classes, self.class_wrong[j], self.class_pixels)}
        return out


def report(name: str, images: int, cms: dict[str, ConfusionMatrix], classes: list[str],
           confidence: dict[str, Confidence] | None = None) -> dict:
    """Print and return each model's per-class IoU and predicted pixel share on one pool (and with
    `confidence`, what each confidence threshold keeps)."""
    first = next(iter(cms.values())).matrix
    gt_share = first.sum(1) / first.sum()
    out = {"images": images, "gt_share": dict(zip(classes, gt_share.round(4).tolist()))}
    print(f"\n{name}, {images} images; per-class IoU % (predicted pixel share % / ground truth's)")
    print(f"{'':>14}" + "".join(f"{c[:9]:>10}" for c in classes) + "      mIoU  pixel acc")
    for k, cm in cms.items():
        # ConfusionMatrix's convention, as in training's validation: a class absent from both the
        # labels and the predictions of this pool is left out of the mean (nan), not counted as 0.
        iou, miou = cm.iou(), cm.miou()
        share = cm.matrix.sum(0) / cm.matrix.sum()
        # Pixel accuracy: how many of the pixels a student is taught carry the right class.
        acc = cm.pixel_accuracy()
        out[k] = {"miou": miou, "pixel_accuracy": acc, "iou": dict(zip(classes, iou.round(4).tolist())),
                  "share": dict(zip(classes, share.round(4).tolist()))}
        label = k if len(k) <= 14 else "..." + k[-11:]
        print(f"{label:>14}" + "".join(f"{100 * v:10.1f}" for v in iou) + f"{100 * miou:10.2f}{100 * acc:11.2f}")
        print(f"{'share':>14}" + "".join(f"{100 * s:4.1f}/{100 * t:<5.1f}" for s, t in zip(share, gt_share)))
        if confidence and k in confidence:
            out[k]["confidence"] = summary = confidence[k].summary(classes)
            print(f"{'confidence':>14}" + "".join(
                f"  >={t}: kept {100 * v['kept']:.1f}%, right {100 * v['accuracy_kept']:.1f}%, "
                f"confidently wrong {100 * v['confidently_wrong']:.1f}% of all;" for t, v in summary.items()))
            for t, v in summary.items():
                print(f"{'wrong >=' + t:>14}" + "".join(f"{100 * w:10.1f}" for w in v["confidently_wrong_by_class"].values())
                      + "   (% of each class's pixels taught confidently as another)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teachers", nargs="?", help="teachers checkpoint (omit to score only the --also models)")
    ap.add_argument("--also", nargs="*", default=[], help="student / Sup-only checkpoints scored the same way")
    ap.add_argument("--preset", default="camvid-cpu")
    ap.add_argument("--data", required=True, help="CamVid root")
    ap.add_argument("--limit", type=int, default=None, help="images per pool (default: all)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--pools", nargs="+", default=["labelled", "unlabelled"], choices=["labelled", "unlabelled", "val"],
                    help="val: the val split (data.val_split), to compare with the training logs' figures")
    ap.add_argument("--flip", action="store_true", help="average each model's softmax with its mirrored image's")
    ap.add_argument("--by-sequence", action="store_true", help="also per recording (the file name's prefix)")
    ap.add_argument("--confidence", type=float, nargs="*", default=[],
                    help="thresholds: what each keeps of the pixels, how many of those are right")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides for the pools, e.g. data.fraction=0.03125")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    cfg = load_config(args.preset, [f"data.root={args.data}", *args.overrides])
    mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    if not args.teachers and not args.also:
        ap.error("give a teachers checkpoint, --also checkpoints, or both")
    teachers = {}
    if args.teachers:
        g, r, _ = load_teachers(args.teachers)
        teachers = {"T_SU": g.eval(), "T_RU": r.eval()}
    models = {**teachers, **{p: load_model(p)[0].eval() for p in args.also}}
    labelled, unlabelled = train_datasets(cfg.data)
    val = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split) if "val" in args.pools else None
    classes = list(labelled.classes)
    n = len(classes)
    result = {}
    for pool, ds in [(p, d) for p, d in (("labelled", labelled), ("unlabelled", unlabelled), ("val", val))
                     if p in args.pools]:
        count = min(len(ds), args.limit or len(ds))
        # With --by-sequence also per recording (CamVid's file prefix: 0001TP, 0006R0, 0016E5): its val
        # split is all 0016E5, so the other sequences show how the labels carry to other streets.
        group = (lambda i: [pool, f"{pool} {ds.ids[i].split('_')[0]}"]) if args.by_sequence else (lambda i: [pool])
        cms: dict[str, dict[str, ConfusionMatrix]] = {}
        confs: dict[str, dict[str, Confidence]] = {}
        images: dict[str, int] = {}
        for i in range(count):
            image, mask = ds.load_image(i), ds.load_mask(i)
            probs = {k: probabilities(m, image, mean, std, int(getattr(m, "stride", 16)), args.flip) for k, m in models.items()}
            if teachers:
                probs["ensemble"] = (probs["T_SU"] + probs["T_RU"]) / 2
            for name in group(i):
                images[name] = images.get(name, 0) + 1
                for k, p in probs.items():
                    cms.setdefault(name, {}).setdefault(k, ConfusionMatrix(n)).update(p[0].argmax(0).numpy(), mask)
                    if args.confidence:
                        confs.setdefault(name, {}).setdefault(k, Confidence(args.confidence, n)).update(p, mask)
        for name, by_model in cms.items():
            result[name] = report(name, images[name], by_model, classes, confs.get(name))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
