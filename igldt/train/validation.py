"""Validation during training: `make_validator` gives `fit` its `val(model) -> mIoU`, sharded over the
ranks, with the run's confusion-matrix and sample figures."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from igldt.config import Config
from igldt.evaluate import _pair, make_predictor
from igldt.figures import SAMPLES, SampleKeeper, run_figure_paths, write_figures
from igldt.metrics import MIoU, ConfusionMatrix, evaluate_predictor
from igldt.train import distributed as D


def make_validator(cfg: Config, dataset, ctx: D.DistContext,
                   figures: Path | None = None) -> Callable[[torch.nn.Module], float]:
    """`val(model) -> mIoU` (an `MIoU`: a float with its per-class IoU) over a labelled dataset (a `SegDataset`), with cfg.train's eval_mode,
    eval_crop, eval_stride and amp, to be called on every rank at once.

    Sharded: rank r scores images r, r + world, r + 2 world, ... and the ranks sum their confusion
    matrices, so each gets the whole set's mIoU (the same number one process gets) in 1/world of
    the time. Rank 0 validating alone would leave the other ranks waiting in a collective for the
    whole validation (Cityscapes' 500 images in slide mode on one GPU), towards the process group's
    timeout; here the ranks wait only for the slowest shard.
    """
    d, tc = cfg.data, cfg.train
    mode, crop = tc.eval_mode, tc.eval_crop
    if mode != "whole":  # refused before training, not at the first validation hours later
        crop = _pair(crop, "train.eval_crop")
    n = len(dataset.classes)
    shard = dataset if ctx.world == 1 else dataset.subset(range(ctx.rank, len(dataset), ctx.world))

    def val(model: torch.nn.Module) -> MIoU:
        predict = make_predictor(model, d.mean, d.std, mode, crop, tc.eval_stride, ctx.device, tc.amp)
        keep = SampleKeeper(SAMPLES if ctx.is_main else 0, len(shard))
        _, cm = evaluate_predictor(predict, shard, num_classes=n, center_crop=crop if mode == "center" else None,
                                   observe=keep)
        total = ConfusionMatrix(n)
        total.merge(D.all_reduce_sum(cm.matrix, ctx))
        if figures is not None and ctx.is_main:  # figures/confusion.png, samples.png: overwritten each time
            write_figures(total, keep.samples, dataset.classes, dataset.palette, *run_figure_paths(figures))
        miou = total.miou()
        per_class = {c: (None if math.isnan(v) else round(float(v), 4)) for c, v in zip(dataset.classes, total.iou())}
        return MIoU(miou if math.isfinite(miou) else 0.0, per_class)

    return val
