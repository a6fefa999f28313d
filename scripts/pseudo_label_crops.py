#!/usr/bin/env python
"""Are the teachers' pseudo-labels as good on the student's training crops as on whole images?

The student stage labels random-scale crops (`data.scale`, `data.crop`), not whole images at the
evaluation scale. This scores both teachers and their ensemble on such crops of the unlabelled pool,
one fixed scale at a time, against the pool's ground truth (CamVid's "unlabelled" images have masks);
`scripts/pseudo_label_quality.py` gives the whole-image figure to compare with.

    python scripts/pseudo_label_crops.py runs/long/seed0/teachers/best.pt --data ../shared/data/camvid
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from igldt.checkpoint import load_teachers
from igldt.config import load_config
from igldt.data.loaders import LabelledSet, train_datasets
from igldt.metrics import ConfusionMatrix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teachers", help="teachers checkpoint")
    ap.add_argument("--data", required=True, help="CamVid root")
    ap.add_argument("--preset", default="camvid-cpu")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0])
    ap.add_argument("--crops", type=int, default=160, help="crops per scale (distinct images of the pool)")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    cfg = load_config(args.preset, [f"data.root={args.data}"])
    g, r, _ = load_teachers(args.teachers)
    g.eval(), r.eval()
    _, pool = train_datasets(cfg.data)
    n = len(pool.classes)
    picks = np.random.default_rng(0).choice(len(pool), min(args.crops, len(pool)), replace=False)
    print(f"{len(picks)} crops of {tuple(cfg.data.crop)} per scale from {len(pool)} unlabelled images; mIoU %")
    for scale in args.scales:
        # A LabelledSet over the unlabelled pool: the student stage's crop, at one scale, with the masks.
        crops = LabelledSet(pool, crop=cfg.data.crop, scale=(scale, scale), flip=cfg.data.flip,
                            mean=cfg.data.mean, std=cfg.data.std, seed=0)
        cms = {k: ConfusionMatrix(n) for k in ("T_SU", "T_RU", "ensemble")}
        for start in range(0, len(picks), args.batch):
            items = [crops[int(i)] for i in picks[start:start + args.batch]]
            x = torch.stack([it["image"] for it in items])
            p_g, p_r = g(x)["logits"].softmax(1), r(x)["logits"].softmax(1)
            for k, p in (("T_SU", p_g), ("T_RU", p_r), ("ensemble", (p_g + p_r) / 2)):
                for pred, item in zip(p.argmax(1).numpy(), items):
                    cms[k].update(pred, item["mask"].numpy())
        print(f"scale {scale:4.2f}: " + "  ".join(f"{k} {100 * cm.miou():.2f}" for k, cm in cms.items()), flush=True)


if __name__ == "__main__":
    main()
