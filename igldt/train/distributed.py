"""DDP plumbing for `torchrun`: one process per device, rank 0 logs and saves.

Single-process runs go through the same functions with world = 1, so the loop has no branches
for "distributed or not" beyond `ctx.is_main`.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False  # we called init_process_group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """auto -> cuda:<local_rank> when CUDA is available, else cpu; `cuda` without a GPU is an error."""
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device {name}: choose auto, cpu or cuda")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available here; use --device cpu")
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: str = "auto") -> DistContext:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    ctx = DistContext(rank, world, local_rank, dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
        ctx.initialised_here = True
    return ctx


def teardown(ctx: DistContext, failed: bool = False) -> None:
    """Leave the process group. After a clean run every rank first waits for the others: a rank that
    shut its gloo connections down while a peer still worked (rank 0 writing its last files) aborted
    now and then at exit ("terminate called without an active exception", one CI run in many). After a
    failure there is no barrier: the other ranks may never reach it."""
    if ctx.initialised_here and dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def wrap(module: nn.Module, ctx: DistContext, sync_bn: bool = False) -> nn.Module:
    """The module DDP-wrapped for world > 1 (SyncBN converted first when asked); unchanged otherwise."""
    if not ctx.distributed:
        return module
    if sync_bn:
        if ctx.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        else:  # torch implements SyncBatchNorm for accelerators only
            warnings.warn("model.sync_bn: SyncBatchNorm needs CUDA; keeping per-process BatchNorm on CPU",
                          stacklevel=2)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_true(flag: bool, ctx: DistContext) -> bool:
    """True on every rank only when `flag` is true on every rank (e.g. "my loss is finite")."""
    if not ctx.distributed:
        return bool(flag)
    t = torch.tensor([0.0 if flag else 1.0], device=ctx.device)
    dist.all_reduce(t)
    return t.item() == 0.0


def any_true(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when `flag` is true on any rank (e.g. "my save interval has passed")."""
    return not all_true(not flag, ctx)


def all_reduce_sum(array: np.ndarray, ctx: DistContext) -> np.ndarray:
    """Element-wise sum of a numpy array over ranks (e.g. the validation confusion matrices)."""
    if not ctx.distributed:
        return array
    t = torch.from_numpy(np.ascontiguousarray(array)).to(ctx.device)
    dist.all_reduce(t)
    return t.cpu().numpy()


def all_reduce_mean(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Mean of each named value over ranks (keys sorted, so every rank sends the same layout)."""
    if not ctx.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    t /= ctx.world
    return dict(zip(keys, t.tolist()))


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's `obj` on every rank (used to share the validation score for best-checkpoint decisions)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_object(obj, ctx: DistContext) -> list:
    """Every rank's `obj`, in rank order, on every rank (per-rank RNG and data positions for resume)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out
