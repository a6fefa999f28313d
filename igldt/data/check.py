"""Dataset validation: find every problem in one pass, so a user fixes them all at once.

Decoding is the slow part; OpenCV releases the GIL while decoding, so a thread pool gives a
near-linear speed-up without the cost of processes.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .base import SegDataset
from .errors import DataError

#: problem kinds, in the order a summary lists them
KINDS = ("empty", "duplicate_id", "unreadable_image", "missing_mask", "unreadable_mask", "size_mismatch",
         "bad_labels")


@dataclass(frozen=True)
class Problem:
    kind: str
    id: str
    path: Path | None
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


def _check_item(ds: SegDataset, i: int, require_masks: bool) -> list[Problem]:
    item = ds.items[i]
    found: list[Problem] = []
    img = cv2.imread(str(item.image), cv2.IMREAD_UNCHANGED)
    if img is None:
        why = "file missing" if not item.image.exists() else "not a decodable image"
        found.append(Problem("unreadable_image", item.id, item.image, f"{item.image}: {why}"))
    if item.mask is None:
        if require_masks:
            found.append(Problem("missing_mask", item.id, None, f"{item.id}: no mask for image {item.image}"))
        return found
    try:
        raw = ds.raw_mask(i)
    except DataError as e:
        found.append(Problem("unreadable_mask", item.id, item.mask, str(e)))
        return found
    if img is not None and img.shape[:2] != raw.shape[:2]:
        found.append(Problem("size_mismatch", item.id, item.mask,
                             f"{item.mask}: mask is {raw.shape[1]}x{raw.shape[0]} but image {item.image.name} "
                             f"is {img.shape[1]}x{img.shape[0]} (WxH)"))
    counts = np.bincount(raw.ravel(), minlength=256)
    bad = np.flatnonzero((counts > 0) & ~ds.valid_values(i))
    if bad.size:
        values = ", ".join(f"{v} ({counts[v]} px)" for v in bad[:8]) + (" ..." if bad.size > 8 else "")
        found.append(Problem("bad_labels", item.id, item.mask,
                             f"{item.mask}: values outside classes 0..{ds.num_classes - 1} and ignore "
                             f"{ds.ignore_index}: {values}"))
    return found


def check_dataset(ds: SegDataset, require_masks: bool = True, workers: int | None = None) -> list[Problem]:
    """Every problem of `ds`: duplicate ids, unreadable images/masks, missing masks (when
    `require_masks`), image/mask size mismatches and label values outside the classes."""
    problems: list[Problem] = []
    if len(ds) == 0:
        return [Problem("empty", "", ds.root, f"{ds.root}: split '{ds.split}' has no items")]
    seen: dict[str, Path] = {}
    for item in ds.items:
        if item.id in seen:
            problems.append(Problem("duplicate_id", item.id, item.image,
                                    f"id '{item.id}' used by {seen[item.id]} and {item.image}"))
        else:
            seen[item.id] = item.image
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for found in pool.map(lambda i: _check_item(ds, i, require_masks), range(len(ds))):
            problems.extend(found)
    return problems


def format_report(problems: list[Problem], checked: int | None = None) -> str:
    """One line per problem, then a summary line (counts per kind)."""
    if not problems:
        return f"OK: {checked} items checked, no problems" if checked is not None else "OK: no problems"
    lines = [str(p) for p in problems]
    counts = Counter(p.kind for p in problems)
    kinds = sorted(counts, key=lambda k: KINDS.index(k) if k in KINDS else len(KINDS))
    where = f" in {checked} items" if checked is not None else ""
    lines.append(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}{where}: "
                 + ", ".join(f"{counts[k]} {k}" for k in kinds))
    return "\n".join(lines)


def assert_valid(ds: SegDataset, require_masks: bool = True) -> None:
    """Refuse bad data before training: DataError carrying the full report."""
    problems = check_dataset(ds, require_masks=require_masks)
    if problems:
        raise DataError(f"{ds.name} split '{ds.split}' at {ds.root} has problems; fix them "
                        f"(`igldt check-data` lists them):\n" + format_report(problems, len(ds)))
