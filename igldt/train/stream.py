"""A resumable stream of (labelled, unlabelled) batch pairs.

Resume equivalence (N iterations straight == k, resume, N - k) needs the batches after a resume to
be the ones the straight run would have seen. Rather than assume how the data layer seeds its
shuffling and augmentation, the stream records the RNG states (python, numpy, torch, CUDA) at the
moment each DataLoader iterator is created, plus how many batches it has handed out. A resume
restores those states, re-creates the iterator (same shuffle, same worker seeds, same `set_epoch`)
and skips the consumed batches. This is exact whenever a batch depends only on the RNG state at
iterator creation and on the batches before it, which holds for DataLoader's samplers and
per-worker seeding, and for datasets that draw from generators seeded per (seed, epoch, index).
"""
from __future__ import annotations

import itertools
import random

import numpy as np
import torch


# ---------------------------------------------------------------------------------------------
# RNG states in a form `torch.load(weights_only=True)` accepts (tensors, ints, lists, dicts)
# ---------------------------------------------------------------------------------------------
def capture_rng() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _set_epoch(loader, epoch: int) -> None:
    """Tell the sampler (DistributedSampler and friends) and the dataset which epoch starts."""
    if hasattr(loader, "set_epoch"):  # igldt.data.loaders.SeededLoader: sampler and dataset
        loader.set_epoch(epoch)
        return
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None),
                getattr(loader, "dataset", None)):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


class _Cursor:
    """One loader's position: its epoch, how many batches it has handed out, the RNG at iterator creation."""

    def __init__(self, loader):
        self.loader = loader
        self.epoch, self.index, self.rng = 0, 0, None
        self._it = None

    def _open(self, skip: int = 0) -> None:
        _set_epoch(self.loader, self.epoch)
        self._it = iter(self.loader)
        if skip:
            # Consumes (loads) the skipped batches: exact whatever the data layer does with randomness.
            for _ in itertools.islice(self._it, skip):
                pass
        self.index = skip

    def next(self):
        if self._it is None:
            self.rng = capture_rng()
            self._open()
        try:
            batch = next(self._it)
        except StopIteration:
            self.epoch += 1
            self.rng = capture_rng()
            self._open()
            try:
                batch = next(self._it)
            except StopIteration:
                raise RuntimeError("a training loader yields no batch: the split has fewer images than "
                                   "train.batch_size (lower it or label more images)") from None
        self.index += 1
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "rng": self.rng}

    def restore(self, state: dict) -> None:
        self.epoch, self.rng = state["epoch"], state["rng"]
        if self.rng is None:  # never opened before the checkpoint
            self._it, self.index = None, 0
            return
        restore_rng(self.rng)
        self._open(skip=state["index"])


class BatchStream:
    """Yields `(batch_l, batch_u)`: unlabelled batches drive the epoch, the labelled loader is cycled
    ("labelled list repeated to the unlabelled length"); `batch_u` is None for the supervised stage."""

    def __init__(self, loader_l, loader_u=None):
        self.cursors = {"l": _Cursor(loader_l)}
        if loader_u is not None:
            self.cursors["u"] = _Cursor(loader_u)
        self.driver = self.cursors["u" if loader_u is not None else "l"]
        self._committed = self._snapshot()

    def __len__(self) -> int:
        """Batches per epoch (of the driving loader)."""
        return len(self.driver.loader)

    @property
    def epoch(self) -> int:
        return self.driver.epoch

    def next(self):
        # Driver first: its epoch rollover happens before the labelled loader is touched.
        batch_u = self.cursors["u"].next() if "u" in self.cursors else None
        return self.cursors["l"].next(), batch_u

    def _snapshot(self) -> dict:
        return {k: c.state() for k, c in self.cursors.items()}

    def commit(self) -> None:
        """Mark the current position as the resume point (called after each completed optimiser step)."""
        self._committed = self._snapshot()

    def state(self) -> dict:
        return self._committed

    def restore(self, state: dict) -> None:
        if set(state) != set(self.cursors):
            raise ValueError("the checkpoint's data streams do not match this stage (labelled/unlabelled)")
        for k, c in self.cursors.items():
            c.restore(state[k])
        self._committed = self._snapshot()
