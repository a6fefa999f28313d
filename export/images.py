"""Real images for the post-export check and for INT8 calibration.

Check images: the checkpoint's validation split if reachable, else `--calib` images, else demo
scenes rendered in memory (nothing is written). Calibration images: `--calib DIR`, else the unlabelled
pool of the training split recorded in the checkpoint config (what the student saw without labels),
else the labelled part.
Images are returned as loaders (callables) so large pools are not held in memory.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from igldt.config import DataConfig, recorded_config
from igldt.data import build_dataset
from igldt.data.demo import demo_images
from igldt.runtime.preprocess import read_image
from igldt.runtime.sources import list_images

from .onnx import ExportError

Loader = Callable[[], np.ndarray]


def _spread(n_total: int, n: int) -> list[int]:
    """n indices spread evenly over the pool (deterministic, covers the whole sequence)."""
    if n_total <= n:
        return list(range(n_total))
    return [int(round(i * (n_total - 1) / (n - 1))) for i in range(n)] if n > 1 else [0]


def _from_dataset(ds, n: int) -> tuple[list[Loader], list[str]]:
    idx = _spread(len(ds), n)
    return [(lambda i=i: ds.load_image(i)) for i in idx], [str(ds.items[i].image) for i in idx]


def _data_cfg(meta: dict) -> DataConfig | None:
    """The checkpoint's data config (None: it records none) with its root made absolute now: the INT8
    calibrator reads the images after changing into a temporary folder, where a relative root would
    point nowhere."""
    cfg = recorded_config(meta)
    if cfg is None or not cfg.data.root:
        return None
    return replace(cfg.data, root=str(Path(cfg.data.root).expanduser().resolve()))


def folder_images(folder: str | Path, n: int) -> tuple[list[Loader], list[str]]:

    paths = list_images(folder)
    idx = _spread(len(paths), n)
    return [(lambda p=paths[i]: read_image(p)) for i in idx], [str(paths[i]) for i in idx]


def check_images(meta: dict, calib: str | Path | None, n: int, demo_root: str | Path | None = None):
    """(loaders, names, description) of up to n real images to compare ONNX Runtime with PyTorch."""
    d = _data_cfg(meta)
    if d is not None:
        try:
            ds = build_dataset(d.dataset, d.root, d.val_split)
            if len(ds):
                loaders, names = _from_dataset(ds, n)
                return loaders, names, f"{d.dataset} {d.val_split} split at {d.root}"
        except Exception:
            pass  # dataset not reachable from here: fall through to --calib / demo
    if calib:
        loaders, names = folder_images(calib, n)
        return loaders, names, f"--calib {calib}"
    if demo_root:
        ds = build_dataset("demo", demo_root, "val")
        loaders, names = _from_dataset(ds, n)
        return loaders, names, f"demo val images at {demo_root}"
    images = demo_images(n)
    return [(lambda im=im: im) for im in images], [f"demo scene {i}" for i in range(n)], \
        f"{n} demo scenes rendered in memory (no dataset reachable; pass --calib DIR for real ones)"


def calibration_images(meta: dict, calib: str | Path | None, n: int):
    """(loaders, names, description) for INT8 calibration; raises ExportError when none exist."""

    if calib:
        if not Path(calib).is_dir():
            raise ExportError(f"--calib {calib}: not a folder; pass a folder of real images (jpg/png)")
        loaders, names = folder_images(calib, n)
        if not loaders:
            raise ExportError(f"--calib {calib}: no images (jpg/png/bmp) inside; add a few dozen real images")
        return loaders, names, f"--calib {calib}"
    d = _data_cfg(meta)
    if d is None:
        raise ExportError("INT8 needs calibration images: the checkpoint records no dataset; pass --calib DIR")
    try:
        from igldt.data.loaders import train_datasets  # torch: loaded once an INT8 export runs, not at import
        labelled, unlabelled = train_datasets(d)
    except Exception as e:
        raise ExportError(f"INT8 needs calibration images: the training data recorded in the checkpoint "
                          f"({d.dataset} at {d.root}) is not reachable ({str(e).splitlines()[0][:160]}); "
                          f"pass --calib DIR") from None
    pool, what = (unlabelled, "unlabelled") if unlabelled is not None and len(unlabelled) else (labelled, "labelled")
    loaders, names = _from_dataset(pool, n)
    return loaders, names, f"{len(loaders)} {what} {d.train_split} images of {d.dataset} at {d.root}"


def held_in_dataset(meta: dict, root: str | Path | None = None):
    """(labelled dataset, description) that `--tolerance` scores INT8 against fp32 on: the validation
    split recorded in the checkpoint, read at `root` (`--calib-val`) when given. Never a test split."""
    d = _data_cfg(meta)
    if d is None:
        raise ExportError("--tolerance needs labelled held-in images: the checkpoint records no dataset")
    where = str(Path(root).expanduser().resolve()) if root else d.root
    try:
        ds = build_dataset(d.dataset, where, d.val_split)
    except Exception as e:
        raise ExportError(f"--tolerance needs labelled held-in images: {d.dataset} {d.val_split} at {where} is not "
                          f"reachable ({str(e).splitlines()[0][:160]}); pass --calib-val ROOT") from None
    if not len(ds):
        raise ExportError(f"--tolerance: {d.dataset} {d.val_split} at {where} holds no image; pass --calib-val ROOT")
    return ds, f"{len(ds)} {d.val_split} images of {d.dataset} at {where}"
