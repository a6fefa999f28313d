"""Dataset formats by name: `build_dataset(name, root, split)` and `detect_format(root)`.

The formats live in `base.py` (the `SegDataset` interface), `public.py` (VOC, Cityscapes, CamVid)
and `folder.py` (the user's own data); their names are imported here too, the import path code
written before the split uses (`from igldt.data.datasets import Item`).
"""
from __future__ import annotations

from pathlib import Path

from igldt.palette import voc_palette

from .base import IGNORE, WHERE_TO_GET, Item, SegDataset, dataset_root
from .errors import DataError
from .folder import FolderDataset, ImageFolder, read_classes_yaml, write_classes_yaml
from .public import (CAMVID_CLASSES, CAMVID_PALETTE, CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAIN, CITYSCAPES_PALETTE,
                     VOC_CLASSES, CamVidDataset, CityscapesDataset, VOCDataset, cityscapes_id)

__all__ = [
    "DEMO_MANIFEST", "FORMATS", "build_dataset", "detect_format",
    "IGNORE", "WHERE_TO_GET", "DataError", "Item", "SegDataset", "voc_palette",
    "FolderDataset", "ImageFolder", "read_classes_yaml", "write_classes_yaml",
    "CAMVID_CLASSES", "CAMVID_PALETTE", "CITYSCAPES_CLASSES", "CITYSCAPES_ID_TO_TRAIN", "CITYSCAPES_PALETTE",
    "VOC_CLASSES", "CamVidDataset", "CityscapesDataset", "VOCDataset", "cityscapes_id",
]

DEMO_MANIFEST = "manifest.json"  # what marks a folder as a generated demo dataset (igldt/data/demo.py)

FORMATS = {"voc": VOCDataset, "cityscapes": CityscapesDataset, "camvid": CamVidDataset,
           "folder": FolderDataset, "images": ImageFolder}


def detect_format(root: str | Path) -> str:
    """Guess the format from the folder layout (for `igldt check-data` without --dataset)."""
    root = dataset_root(root, "dataset")
    if (root / "classes.yaml").is_file():
        return "folder"
    if (root / "JPEGImages").is_dir() or (root / "VOC2012" / "JPEGImages").is_dir():
        return "voc"
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if any((root / f"{s}annot").is_dir() for s in ("train", "val", "test")):
        return "camvid"
    raise DataError(f"cannot tell the format of {root}; pass --dataset voc|cityscapes|camvid|folder")


def build_dataset(name: str, root: str | Path, split: str = "train") -> SegDataset:
    """The dataset `name` (voc | cityscapes | camvid | folder | demo | images) at `root`."""
    name = name.lower()
    if name == "demo":  # read only: generating it is an explicit step (`igldt demo --data-only`)
        if not (Path(root).expanduser() / DEMO_MANIFEST).is_file():
            raise DataError(f"no demo dataset at {root}; generate it first: igldt demo --data-only --out DIR "
                            f"(writes DIR/data), or igldt.data.make_demo_dataset('{root}')")
        return FolderDataset(Path(root).expanduser(), split)
    if name not in FORMATS:
        raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join([*FORMATS, 'demo'])}")
    return FORMATS[name](root, split)
