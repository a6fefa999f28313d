"""The public benchmark formats: PASCAL VOC 2012 (+ SBD), Cityscapes and CamVid, with their classes
and colours (docs/data.md: where to get them and the folders igldt reads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from igldt.palette import voc_palette

from .base import IGNORE, Item, SegDataset, dataset_root, paired_items, require_dir
from .errors import DataError
from .splits import read_split_file

# ---------------------------------------------------------------------------------------------
# PASCAL VOC 2012 (+ SBD augmented masks)

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]


class VOCDataset(SegDataset):
    """`JPEGImages/`, `SegmentationClass/` (palette PNGs) and `SegmentationClassAug/` (SBD, grey ids).

    The Aug mask wins when both exist: it covers all 10,582 `train_aug` ids and agrees with
    `SegmentationClass` on the 1,464 train images. `split` is a list name looked up in
    `ImageSets/Segmentation/`, `ImageSets/SegmentationAug/` or the root, or a path to a list file.
    """

    name = "voc"
    ignore_colour = (224, 224, 192)  # the VOC object-boundary colour in palette PNGs

    def __init__(self, root: str | Path, split: str = "train") -> None:

        root = dataset_root(root, "PASCAL VOC 2012")
        if not (root / "JPEGImages").is_dir() and (root / "VOC2012" / "JPEGImages").is_dir():
            root = root / "VOC2012"  # the VOCdevkit folder was given
        images = require_dir(root / "JPEGImages", "VOC folder",
                              "pass the VOC2012 folder that holds JPEGImages/ and SegmentationClass/")
        list_file = self._find_list(root, split)
        ids = read_split_file(list_file)
        aug, plain = root / "SegmentationClassAug", root / "SegmentationClass"
        if not aug.is_dir() and not plain.is_dir():
            raise DataError(f"VOC folder {root} has neither SegmentationClassAug/ nor SegmentationClass/; "
                            "add the masks (SBD SegmentationClassAug for train_aug)")
        items = []
        for i in ids:
            mask = next((p for p in (aug / f"{i}.png", plain / f"{i}.png") if p.is_file()), None)
            items.append(Item(i, images / f"{i}.jpg", mask))
        super().__init__(root, split, items, VOC_CLASSES, voc_palette(21), IGNORE)

    @staticmethod
    def _find_list(root: Path, split: str) -> Path:
        direct = Path(split).expanduser()
        if direct.suffix == ".txt" and direct.is_file():
            return direct
        candidates = [root / "ImageSets" / "Segmentation" / f"{split}.txt",
                      root / "ImageSets" / "SegmentationAug" / f"{split}.txt",
                      root / f"{split}.txt"]
        for c in candidates:
            if c.is_file():
                return c
        raise DataError(f"VOC split '{split}' not found (looked for {candidates[0]}); use train, val, "
                        "train_aug (SBD list) or a path to a split file")


# ---------------------------------------------------------------------------------------------
# Cityscapes

CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                      "bus", "train", "motorcycle", "bicycle"]
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)], np.uint8)
#: label id -> train id, from cityscapesScripts `labels.py` (everything else, ids 0..33, -> 255)
CITYSCAPES_ID_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                          24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
_LABEL_IDS_LUT = np.full(256, IGNORE, np.uint8)
for _k, _v in CITYSCAPES_ID_TO_TRAIN.items():
    _LABEL_IDS_LUT[_k] = _v
_LABEL_IDS_VALID = np.zeros(256, bool)
_LABEL_IDS_VALID[:34] = True


def cityscapes_id(image: Path) -> str:
    """`aachen_000000_000019_leftImg8bit.png` -> `aachen_000000_000019` (unique: the city prefixes it)."""
    return image.name[: -len("_leftImg8bit.png")] if image.name.endswith("_leftImg8bit.png") else image.stem


class CityscapesDataset(SegDataset):
    """`leftImg8bit/{split}/{city}/*_leftImg8bit.png` with `gtFine/{split}/{city}/*_gtFine_*`.

    Uses `*_labelTrainIds.png` when present (the output of cityscapesScripts' createTrainIdLabelImgs),
    otherwise converts `*_labelIds.png` through the standard table on load, so the raw download works.
    """

    name = "cityscapes"

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = dataset_root(root, "Cityscapes")
        base = root / "leftImg8bit"
        require_dir(base, "Cityscapes folder", f"pass the folder that holds leftImg8bit/ and gtFine/ (root {root})")
        img_dir = require_dir(base / split, "Cityscapes split folder", "use split train, val or test")
        gt = root / "gtFine" / split
        items = []
        for city in sorted(p for p in img_dir.iterdir() if p.is_dir()):
            for img in sorted(city.glob("*_leftImg8bit.png")):
                cid = cityscapes_id(img)
                mask = next((p for p in (gt / city.name / f"{cid}_gtFine_labelTrainIds.png",
                                         gt / city.name / f"{cid}_gtFine_labelIds.png") if p.is_file()), None)
                items.append(Item(cid, img, mask))
        if not items:
            raise DataError(f"no *_leftImg8bit.png images under {img_dir}/<city>/; check the Cityscapes download")
        super().__init__(root, split, items, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE)

    def _label_ids(self, i: int) -> bool:
        m = self.items[i].mask
        return m is not None and m.name.endswith("_labelIds.png")

    def mask_lut(self, i: int) -> np.ndarray:
        return _LABEL_IDS_LUT if self._label_ids(i) else super().mask_lut(i)

    def valid_values(self, i: int) -> np.ndarray:
        return _LABEL_IDS_VALID if self._label_ids(i) else super().valid_values(i)


# ---------------------------------------------------------------------------------------------
# CamVid (11-class SegNet layout)

CAMVID_CLASSES = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign/symbol", "fence", "car",
                  "pedestrian", "bicyclist"]
CAMVID_PALETTE = np.array([(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
                           (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
                           (0, 128, 192)], np.uint8)


class CamVidDataset(SegDataset):
    """`{split}/` images beside `{split}annot/` masks of the same name; value 11 = unlabelled -> 255."""

    name = "camvid"
    ignore_colour = (0, 0, 0)

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = dataset_root(root, "CamVid")
        img_dir = require_dir(root / split, "CamVid split folder",
                               f"use split train, val or test of a SegNet-layout CamVid root ({root})")
        items = paired_items(img_dir, root / f"{split}annot")
        if not items:
            raise DataError(f"no images in {img_dir}; check the CamVid folder")
        super().__init__(root, split, items, CAMVID_CLASSES, CAMVID_PALETTE, ignore_index=11)

    def mask_lut(self, i: int) -> np.ndarray:
        lut = super().mask_lut(i)
        lut[11] = IGNORE
        return lut
