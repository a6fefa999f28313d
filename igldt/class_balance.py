"""Class-balanced cross pseudo supervision (`method.cps_class_power`, a deviation from METHOD.md;
docs/method.md): per-class weights for the teachers' cross CE, from running class frequencies.

CPS on CamVid 1/8 erases the rare classes the labels taught (docs/experiments.md, section 12):
weighting each cross pseudo-label by its class's labelled frequency^-p keeps them (section 13), but
amplifies whatever a partner wrongly predicts as a rare class (section 14); weighting by the ratio of
the labelled to the pseudo-labelled frequency, (f / g)^p, pulls the pseudo-labels toward the labelled
class distribution from both sides instead.
"""
from __future__ import annotations

import torch

from igldt.constants import IGNORE_INDEX

FREQUENCY_MOMENTUM = 0.99  # running class frequency: ~the last 100 batches
FREQUENCY_FLOOR = 1e-3     # a class unseen so far weighs at most ~17x road's (CamVid, p = 0.5)


def label_counts(target: torch.Tensor, classes: int) -> torch.Tensor:
    """Pixels of each class in a label map, void (IGNORE_INDEX) left out."""
    known = target[target != IGNORE_INDEX]
    return torch.bincount(known.reshape(-1), minlength=classes)[:classes]


def running_class_frequency(counts: torch.Tensor, running: torch.Tensor | None = None) -> torch.Tensor:
    """The running pixel frequency of each class: an exponential moving average (`FREQUENCY_MOMENTUM`)
    of each batch's frequencies (`counts`: its pixels per class, `label_counts`), started at the first."""
    f = counts.float() / counts.sum().clamp_min(1)
    return f if running is None else FREQUENCY_MOMENTUM * running.to(f.device) + (1 - FREQUENCY_MOMENTUM) * f


def class_balance_weights(freq: torch.Tensor, power: float, pseudo_freq: torch.Tensor | None = None) -> torch.Tensor:
    """Per-class weights of the cross CE, frequencies floored at `FREQUENCY_FLOOR`.

    Without `pseudo_freq`: w_c = f_c^-p (f: the labelled ground truth's class frequency), scaled so that
    the labelled distribution's mean weight sum_c f_c w_c is 1. With it (g: the cross pseudo-labels'
    class frequency): w_c = (f_c / g_c)^p, scaled so that sum_c g_c w_c = 1, the mean weight of the
    pseudo-labelled pixels. Either way the cross CE, a weighted mean, keeps the scale of CPS's."""
    if pseudo_freq is None:
        w = freq.clamp_min(FREQUENCY_FLOOR).pow(-power)
        return w / (freq * w).sum()
    w = (freq.clamp_min(FREQUENCY_FLOOR) / pseudo_freq.clamp_min(FREQUENCY_FLOOR)).pow(power)
    return w / (pseudo_freq * w).sum()


def median_frequency_weights(masks, classes: int) -> torch.Tensor:
    """(6)'s class weights for `method.sup_loss: median_freq` (Eigen & Fergus 2015, SegNet's CamVid
    recipe): w_c = median(f) / f_c, where f_c is class c's pixels over the pixels of the images holding c.
    `masks`: the labelled set's label maps (numpy or torch, void = IGNORE_INDEX). A class absent from
    every mask gets the largest weight of the others (nothing to learn it from, nothing to break)."""
    pixels = torch.zeros(classes, dtype=torch.float64)
    present_in = torch.zeros(classes, dtype=torch.float64)  # pixels of the images that hold each class
    for mask in masks:
        counts = label_counts(torch.as_tensor(mask).long(), classes).double()
        pixels += counts
        present_in += (counts > 0).double() * counts.sum()
    if not bool((pixels > 0).any()):
        raise ValueError("median-frequency weights: the labelled masks hold no labelled pixel")
    return median_frequency(pixels, present_in)


def median_frequency(pixels: torch.Tensor, present_in: torch.Tensor) -> torch.Tensor:
    """w_c = median(f) / f_c with f_c = pixels_c / present_in_c (class c's pixels over the pixels of the
    images holding it); a class with no pixel gets the largest weight of the others. Some class must
    have a pixel."""
    pixels, present_in = pixels.double(), present_in.double()
    seen = pixels > 0
    freq = pixels[seen] / present_in[seen]
    w = torch.full(pixels.shape, 0.0, dtype=torch.float64)
    w[seen] = freq.median() / freq
    w[~seen] = w[seen].max()
    return w.float()
