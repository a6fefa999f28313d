"""Semi-supervised split protocol: read published split files, make seeded splits, write them.

Published splits (UniMatch, CPS, U2PL, ...) come in several line formats; all reduce to the
item ids our datasets use, so a paper's split file can be used as is. `make_split` is pure
numpy (PCG64 from a seed over the *sorted* ids), so one seed gives one split on every machine.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from igldt.io import write_text_atomic

from .base import SegDataset
from .errors import IMAGE_EXTS, DataError

LABELLED_FILE = "labeled.txt"
UNLABELLED_FILE = "unlabeled.txt"


def line_to_id(token: str) -> str:
    """One split-file entry (its first column) -> item id.

    `JPEGImages/x.jpg`, `/JPEGImages/x.jpg`, `train/x.png`, `/SegNet/CamVid/train/x.png` -> `x`;
    `leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png` -> `aachen_000000_000019`;
    a bare id (`2007_000032`, no image suffix) is kept as written.
    """
    token = token.strip().replace("\\", "/")
    if Path(token).suffix.lower() not in IMAGE_EXTS:
        return token.strip("/")
    name = token.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0]
    for suffix in ("_leftImg8bit", "_gtFine_labelTrainIds", "_gtFine_labelIds"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def read_split_file(path: str | Path) -> list[str]:
    """Ids in file order, from any published line format; blank lines and `#` comments skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"split file {path} not found; create it with `igldt split` or fix the path")
    ids: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        item = line_to_id(line.split()[0])
        if not item:
            raise DataError(f"{path}:{n}: cannot read an id from '{line}'")
        if item in seen:
            raise DataError(f"{path}:{n}: id '{item}' already listed on line {seen[item]}; remove the duplicate")
        seen[item] = n
        ids.append(item)
    if not ids:
        raise DataError(f"split file {path} lists no ids; write one id (or image path) per line")
    return ids


def parse_fraction(value: str | float | Fraction) -> Fraction:
    """`"1/8"`, `0.125`, `"0.125"` or `"12.5%"` -> Fraction(1, 8); must lie in (0, 1]."""
    try:
        if isinstance(value, str):
            text = value.strip()
            frac = Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text)
        else:
            frac = Fraction(value).limit_denominator(1_000_000)
    except (ValueError, ZeroDivisionError, TypeError):
        raise DataError(f"fraction '{value}' is not a number; use e.g. 1/8 or 0.125") from None
    if not 0 < frac <= 1:
        raise DataError(f"fraction {value} must be in (0, 1], e.g. 1/16, 1/8, 1/4, 1/2")
    return frac


def labelled_count(n: int, fraction: str | float | Fraction | None = None, count: int | None = None) -> int:
    """How many of n items are labelled: ceil(fraction * n) (1/8 of 367 -> 46), or `count`."""
    if (fraction is None) == (count is None):
        raise DataError("give exactly one of fraction (e.g. 1/8) or count (e.g. 46)")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= n:
            raise DataError(f"count {count} must be an integer between 1 and the {n} items of the split")
        return int(count)
    return max(1, math.ceil(parse_fraction(fraction) * n))


def make_split(ids: Iterable[str], fraction: str | float | Fraction | None = None, count: int | None = None,
               seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded (labelled, unlabelled) split of `ids`, both sorted; identical on any machine.

    The ids are sorted first (listing order never matters), then a PCG64 permutation from
    `np.random.default_rng(seed)` picks the first `labelled_count` of them.
    """
    pool = sorted(ids)
    if len(set(pool)) != len(pool):
        raise DataError("make_split: the ids contain duplicates; ids must be unique")
    if not pool:
        raise DataError("make_split: no ids to split")
    k = labelled_count(len(pool), fraction, count)
    order = np.random.default_rng(int(seed)).permutation(len(pool))
    chosen = set(order[:k].tolist())
    labelled = [x for i, x in enumerate(pool) if i in chosen]
    unlabelled = [x for i, x in enumerate(pool) if i not in chosen]
    return labelled, unlabelled


def write_split(out_dir: str | Path, labelled: Sequence[str], unlabelled: Sequence[str],
                force: bool = False) -> tuple[Path, Path]:
    """Write `labeled.txt` and `unlabeled.txt` (bare ids, one per line) atomically.

    Existing files are kept unless `force`: a split is an experiment's identity, so replacing
    one by accident would silently change what a run means.
    """
    out = Path(out_dir).expanduser()
    overlap = set(labelled) & set(unlabelled)
    if overlap:
        raise DataError(f"{len(overlap)} ids are both labelled and unlabelled (e.g. {sorted(overlap)[0]})")
    paths = out / LABELLED_FILE, out / UNLABELLED_FILE
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise DataError(f"{' and '.join(existing)} already exist; pick another --out or pass --force to replace")
    out.mkdir(parents=True, exist_ok=True)
    for path, ids in zip(paths, (labelled, unlabelled)):
        write_text_atomic(path, "".join(f"{i}\n" for i in ids))
    return paths


def select(dataset: SegDataset, ids: Iterable[str]) -> SegDataset:
    """A view of `dataset` holding exactly `ids`, in the given order."""
    index = {item.id: k for k, item in enumerate(dataset.items)}
    wanted = list(ids)
    missing = [i for i in wanted if i not in index]
    if missing:
        raise DataError(f"{len(missing)} of {len(wanted)} ids are not in {dataset.name} split '{dataset.split}' "
                        f"at {dataset.root} (first: {', '.join(missing[:3])}); check the split file belongs to "
                        "this dataset and split")
    if len(set(wanted)) != len(wanted):
        raise DataError("select: the id list has duplicates; each id may appear once")
    return dataset.subset(index[i] for i in wanted)
