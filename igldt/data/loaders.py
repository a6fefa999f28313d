"""Torch datasets and loaders for the three training stages (the only torch module in igldt.data).

Determinism: each sample draws its augmentation from `default_rng([seed, epoch, stream, index])`,
where `index` is the position in the (repeated) list and the shuffle order comes from
`default_rng([seed, epoch])`. Nothing depends on the worker that happens to load a sample, so
results are the same with 0, 1 or 8 workers; ranks shard one global order like DistributedSampler.
"""
from __future__ import annotations

import math
import multiprocessing as mp
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from igldt.config import Config, DataConfig, TrainConfig

from . import transforms as T
from .base import SegDataset
from .check import assert_valid
from .datasets import build_dataset
from .errors import DataError
from .splits import make_split, read_split_file, select

LABELLED_STREAM, UNLABELLED_STREAM = 1, 2


class _SeededSet(Dataset):
    """Shared seeding: `set_epoch` changes every sample's augmentation; `length` repeats the list."""

    stream = 0

    def __init__(self, ds: SegDataset, seed: int = 0, length: int | None = None) -> None:
        if len(ds) == 0:
            raise DataError(f"{ds.name} split '{ds.split}' at {ds.root} has no items to load")
        self.ds = ds
        self.seed = int(seed)
        self.length = int(length) if length is not None else len(ds)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, self.stream, int(index)])


class LabelledSet(_SeededSet):
    """Weakly augmented labelled crops: `{"image": 3xHxW float32, "mask": HxW int64}`."""

    stream = LABELLED_STREAM

    def __init__(self, ds: SegDataset, crop: Sequence[int] | None = (512, 512), scale: Sequence[float] | None = (0.5, 2.0),
                 flip: bool = True, mean: Sequence[float] = T.IMAGENET_MEAN, std: Sequence[float] = T.IMAGENET_STD,
                 seed: int = 0, length: int | None = None) -> None:
        super().__init__(ds, seed, length)
        self.crop, self.scale, self.flip, self.mean, self.std = crop, scale, flip, mean, std

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = index % len(self.ds)
        rng = self.rng(index)
        img, mask = T.weak(self.ds.load_image(i), self.ds.load_mask(i), rng, self.crop, self.scale, self.flip,
                           mean=self.mean)
        return {"image": torch.from_numpy(T.normalize(img, self.mean, self.std)),
                "mask": torch.from_numpy(mask.astype(np.int64))}


class UnlabelledSet(_SeededSet):
    """Unlabelled crops: `image` (weak view), `valid` (bool HxW, False on crop padding), `strong` views
    of the same crop (photometric: `image_s`, then `image_s2`) and `boxes` CutMix regions (bool HxW, for
    mixing with another sample of the batch: `box`, then `box2`)."""

    stream = UNLABELLED_STREAM

    def __init__(self, ds: SegDataset, crop: Sequence[int] | None = (512, 512), scale: Sequence[float] | None = (0.5, 2.0),
                 flip: bool = True, strong: int = 0, boxes: int = 0,
                 mean: Sequence[float] = T.IMAGENET_MEAN, std: Sequence[float] = T.IMAGENET_STD,
                 seed: int = 0, length: int | None = None) -> None:
        super().__init__(ds, seed, length)
        self.crop, self.scale, self.flip, self.mean, self.std = crop, scale, flip, mean, std
        self.strong, self.boxes = int(strong), int(boxes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = index % len(self.ds)
        rng = self.rng(index)
        img = self.ds.load_image(i)
        img, pad = T.weak(img, np.zeros(img.shape[:2], np.uint8), rng, self.crop, self.scale, self.flip, mean=self.mean)
        out = {"image": torch.from_numpy(T.normalize(img, self.mean, self.std)),
               "valid": torch.from_numpy(pad != T.IGNORE)}
        for k in range(self.strong):
            out[view_key("image_s", k)] = torch.from_numpy(T.normalize(T.strong(img, rng), self.mean, self.std))
        for k in range(self.boxes):
            out[view_key("box", k)] = torch.from_numpy(T.cutmix_box(rng, *img.shape[:2]))
        return out


def view_key(name: str, k: int) -> str:
    """The batch key of the k-th (from 0) strong view or CutMix box: image_s, image_s2, ...; box, box2, ..."""
    return name if k == 0 else f"{name}{k + 1}"


class EvalSet(Dataset):
    """Whole images, no augmentation: `{"image": 3xHxW float32, "mask": HxW int64, "id": str}`."""

    def __init__(self, ds: SegDataset, mean: Sequence[float] = T.IMAGENET_MEAN,
                 std: Sequence[float] = T.IMAGENET_STD) -> None:
        self.ds, self.mean, self.std = ds, mean, std

    def __len__(self) -> int:
        return len(self.ds)

    @property
    def classes(self) -> list[str]:
        return self.ds.classes

    def __getitem__(self, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {"image": torch.from_numpy(T.normalize(self.ds.load_image(index), self.mean, self.std)),
                               "id": self.ds.items[index].id}
        if self.ds.items[index].mask is not None:
            out["mask"] = torch.from_numpy(self.ds.load_mask(index).astype(np.int64))
        return out


class ShardedSampler(Sampler[int]):
    """Seeded shuffle of one global order, padded to a multiple of `world` and sharded by rank
    (DistributedSampler semantics without needing an initialised process group)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        self.n, self.rank, self.world, self.seed, self.shuffle = n, rank, world, int(seed), shuffle
        self.epoch = 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        total = self.per_rank * self.world
        if total > self.n:
            order = np.concatenate([order, order[: total - self.n]])
        return iter(order[self.rank::self.world].tolist())


class SeededLoader(DataLoader):
    """A DataLoader whose `set_epoch` reaches both the sampler (shuffle) and the dataset (augmentation)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def _worker_init(worker_id: int) -> None:
    # Workers already run in parallel; OpenCV's own thread pool per worker would oversubscribe.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _worker_context() -> str:
    # Not fork: a worker forked after the parent ran thread pools (OpenCV, the data check, torch)
    # can inherit a held lock and hang forever (seen here in CI on 2 cores).
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def _loader(dataset: Dataset, batch_size: int, rank: int, world: int, seed: int, workers: int) -> SeededLoader:
    sampler = ShardedSampler(len(dataset), rank, world, seed)
    return SeededLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        drop_last=len(sampler) >= batch_size, worker_init_fn=_worker_init if workers else None,
                        pin_memory=torch.cuda.is_available(), persistent_workers=False,
                        multiprocessing_context=_worker_context() if workers else None)


def train_datasets(d: DataConfig) -> tuple[SegDataset, SegDataset | None]:
    """(labelled, unlabelled | None) views of `data.train_split`, from split files or a seeded split.

    No `labelled_list` -> `make_split(count or else fraction, split_seed)` over the split's ids,
    the same on every machine; no `unlabelled_list` -> the rest of the split. Neither fraction nor count ->
    fully supervised (every item labelled, no unlabelled set).
    """
    ds = build_dataset(d.dataset, d.root, d.train_split)
    if d.labelled_list:
        labelled_ids = read_split_file(Path(d.labelled_list))
        rest = None
    elif d.fraction is None and d.count is None:
        labelled_ids, rest = ds.ids, []
    else:  # data.count (null by default) is the explicit choice, so it wins over data.fraction
        labelled_ids, rest = make_split(ds.ids, fraction=None if d.count is not None else d.fraction,
                                        count=d.count, seed=d.split_seed)
    if d.unlabelled_list:
        unlabelled_ids = read_split_file(Path(d.unlabelled_list))
    elif rest is not None:
        unlabelled_ids = rest
    else:
        chosen = set(labelled_ids)
        unlabelled_ids = [i for i in ds.ids if i not in chosen]
    overlap = set(labelled_ids) & set(unlabelled_ids)
    if overlap:
        raise DataError(f"{len(overlap)} ids are in both the labelled and unlabelled lists "
                        f"(e.g. {sorted(overlap)[0]}); fix data.labelled_list / data.unlabelled_list")
    labelled = select(ds, labelled_ids)
    unlabelled = select(ds, unlabelled_ids) if unlabelled_ids else None
    return labelled, unlabelled


def per_rank_batch(train: TrainConfig, world: int) -> int:
    """Labelled (and unlabelled) images one rank loads per step: `train.batch_size`, or with
    `train.global_batch` its 1/world share (a ValueError when world does not divide it)."""
    batch = train.batch_size
    if not train.global_batch or world == 1:
        return batch
    if batch % world:
        raise ValueError(f"train.batch_size={batch} is the global batch (train.global_batch: true) and "
                         f"{world} processes cannot share it evenly; run on a number of GPUs that divides "
                         f"{batch}, or set train.batch_size to a multiple of {world}")
    return batch // world


def build_train_loaders(cfg: Config, rank: int = 0, world: int = 1, validate: bool = True,
                        views: tuple[int, int] | None = None) -> tuple[SeededLoader, SeededLoader | None]:
    """(labelled_loader, unlabelled_loader | None) for one rank, from `data:` and `train:` keys.

    The labelled list is repeated to the unlabelled length so one epoch pairs every unlabelled
    image with a labelled one; both load `per_rank_batch(train, world)` images a step. With `validate`, the
    labelled set is checked completely (`assert_valid`) and unlabelled images must exist.
    `views`: (strong views, CutMix boxes) of each unlabelled crop, what the stage uses (default: one of
    each where `data.strong` / `data.cutmix` ask for them).
    Call `loader.set_epoch(epoch)` on both loaders at the start of every epoch.
    """
    d, t = cfg.data, cfg.train
    batch = per_rank_batch(t, world)  # before the data check, which can take minutes
    labelled, unlabelled = train_datasets(d)
    if validate:
        assert_valid(labelled)
        if unlabelled is not None:
            missing = [it.image for it in unlabelled.items if not it.image.is_file()]
            if missing:
                raise DataError(f"{len(missing)} unlabelled images are missing (first: {missing[0]}); "
                                "fix the unlabelled list or restore the files")
    common = dict(crop=d.crop, scale=d.scale, flip=d.flip, mean=d.mean, std=d.std, seed=t.seed)
    length = max(len(labelled), len(unlabelled)) if unlabelled is not None else len(labelled)
    if unlabelled is not None and d.unlabelled_pool == "labelled":
        # The control for what the unlabelled images add: the same labelled batches (same length, same
        # order) and losses, but the unlabelled stream draws the labelled images (masks unused).
        unlabelled = labelled
    lab_loader = _loader(LabelledSet(labelled, length=length, **common), batch, rank, world, t.seed, d.workers)
    if unlabelled is None:
        return lab_loader, None
    strong, boxes = views if views is not None else (int(d.strong), int(d.cutmix))
    unl_set = UnlabelledSet(unlabelled, strong=strong, boxes=boxes, length=length, **common)
    return lab_loader, _loader(unl_set, batch, rank, world, t.seed + 1, d.workers)


def build_val_set(d: DataConfig, validate: bool = True) -> EvalSet:
    """Whole-image evaluation set of `data.val_split` (checked with `assert_valid` by default)."""
    ds = build_dataset(d.dataset, d.root, d.val_split)
    if validate:
        assert_valid(ds)
    return EvalSet(ds, d.mean, d.std)
