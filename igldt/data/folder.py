"""The user's own data: `classes.yaml` (names, colours, ignore value), an `images/` + `masks/` folder
(`FolderDataset`) and a folder of unlabelled images (`ImageFolder`)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from igldt.palette import voc_palette

from .base import IGNORE, Item, SegDataset, dataset_root, paired_items, require_dir
from .errors import IMAGE_EXTS, DataError
from .splits import read_split_file


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

        root = dataset_root(root, "image/mask")
        classes, palette, ignore = read_classes_yaml(root / "classes.yaml")
        images = require_dir(root / "images", "images folder", f"put the images in {root / 'images'}/ (masks in masks/)")
        masks = root / "masks"
        sub = images / split
        if split and sub.is_dir():
            items = paired_items(sub, masks / split)
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
                items = paired_items(images, masks)
            else:
                raise DataError(f"split '{split}' not found in {root}: expected images/{split}/ or "
                                f"splits/{split}.txt (a list of ids)")
        if not items:
            raise DataError(f"no images for split '{split}' in {images}; add images ({', '.join(IMAGE_EXTS)})")
        super().__init__(root, split, items, classes, palette, ignore)

    @staticmethod
    def _index(images: Path, masks: Path) -> dict[str, Item]:
        index: dict[str, Item] = {}
        dirs = [(images, masks)] + [(d, masks / d.name) for d in sorted(images.iterdir()) if d.is_dir()]
        for img_dir, mask_dir in dirs:
            for it in paired_items(img_dir, mask_dir):
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
        root = dataset_root(root, "image")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not paths:
            raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) under {root}; point at a folder of images")
        items = [Item(p.relative_to(root).with_suffix("").as_posix(), p, None) for p in paths]
        pal = np.zeros((0, 3), np.uint8) if palette is None else palette
        super().__init__(root, split, items, classes, pal, IGNORE)
