#!/usr/bin/env python
"""How good are the pseudo-labels the student learns from? Scores teachers (and any other checkpoint)
on the *unlabelled* part of the training split, whose masks a benchmark such as CamVid still has.

    python scripts/pseudo_labels.py --teachers runs/camvid/seed0/teachers/best.pt \
        --compare runs/camvid/seed0/supervised/best.pt

Prints mIoU and pixel accuracy of the global teacher, the local teacher, their ensemble (mean of
probabilities) and each --compare checkpoint on those images, and the accuracy and coverage of the
ensemble's pseudo-labels above confidence thresholds (what `method.threshold` would keep).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from igldt.checkpoint import load_model, load_teachers
from igldt.config import recorded_config
from igldt.data.loaders import train_datasets
from igldt.metrics import ConfusionMatrix
from igldt.train.stages import ensemble_logits

THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", required=True)
    ap.add_argument("--compare", nargs="*", default=[], help="student / supervised checkpoints to score alike")
    ap.add_argument("--limit", type=int, default=None, help="first N unlabelled images only")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    g, r, meta = load_teachers(args.teachers)
    cfg = recorded_config(meta)
    if cfg is None:
        raise SystemExit(f"{args.teachers} records no training config: its unlabelled images are unknown")
    _, unlabelled = train_datasets(cfg.data)
    compare = {p: load_model(p)[0].eval() for p in args.compare}
    names = ["global teacher", "local teacher", "ensemble", *compare]
    n = len(meta["classes"])
    mats = {k: ConfusionMatrix(n) for k in names}
    kept = {t: ConfusionMatrix(n) for t in THRESHOLDS}
    total = 0
    mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    count = len(unlabelled) if args.limit is None else min(args.limit, len(unlabelled))
    with torch.inference_mode():
        for i in range(count):
            image, mask = unlabelled.load_image(i), unlabelled.load_mask(i)
            if mask is None:
                raise SystemExit(f"unlabelled item {i} has no mask: this dataset cannot score pseudo-labels")
            x = (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255 - mean) / std
            lg, lr = g.eval()(x)["logits"], r.eval()(x)["logits"]  # each teacher once; the ensemble from both
            logits = {"global teacher": lg, "local teacher": lr, "ensemble": ensemble_logits(lg, lr),
                      **{k: m(x)["logits"] for k, m in compare.items()}}
            for k, lo in logits.items():
                mats[k].update(lo[0].argmax(0).numpy(), mask)
            conf, label = logits["ensemble"][0].softmax(0).max(0)
            valid = mask != mats["ensemble"].ignore_index
            total += int(valid.sum())
            for t in THRESHOLDS:
                keep = (conf.numpy() >= t) & valid
                kept[t].update(label.numpy()[keep], mask[keep])
    rows = {k: {"miou": float(np.nanmean(c.iou())), "pixel_acc": float(np.trace(c.matrix) / max(c.matrix.sum(), 1))}
            for k, c in mats.items()}
    thr = {t: {"coverage": float(c.matrix.sum() / max(total, 1)), "pixel_acc": float(np.trace(c.matrix) / max(c.matrix.sum(), 1))}
           for t, c in kept.items()}
    print(f"{count} unlabelled images of {cfg.data.dataset}/{cfg.data.train_split}")
    for k, v in rows.items():
        print(f"  {k:60s} mIoU {100 * v['miou']:6.2f}  pixel acc {100 * v['pixel_acc']:6.2f}")
    print("ensemble pseudo-labels above a confidence threshold:")
    for t, v in thr.items():
        print(f"  >= {t:4.2f}: coverage {100 * v['coverage']:6.2f}%  pixel acc {100 * v['pixel_acc']:6.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"images": count, "models": rows, "thresholds": {str(t): v for t, v in thr.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
