"""What `fit` steps and checkpoints (`Training`: the stage's models, the batch stream, optimiser,
schedule, AMP) and how it is built from a stage, its loaders and the config (`build_training`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from igldt.config import Config, TrainConfig
from igldt.train import distributed as D
from igldt.train.optim import Amp, build_amp, build_optimizer, build_scheduler
from igldt.train.stages import Stage
from igldt.train.stream import BatchStream


def total_iterations(train: TrainConfig, batches_per_epoch: int) -> tuple[int, int]:
    """(total updates, updates per epoch): train.iters when set, else train.epochs full passes."""
    accum = train.accum
    if accum < 1:
        raise ValueError(f"train.accum={accum}: must be >= 1")
    per_epoch = max(1, batches_per_epoch // accum)
    total = train.iters if train.iters else train.epochs * per_epoch
    if total < 1:
        raise ValueError("train.iters and train.epochs give no iteration to run; set one of them > 0")
    return total, per_epoch


@dataclass
class Training:
    """What `fit` steps and checkpoints: the stage's models, the data, the optimiser and its schedule."""
    stage: Stage
    stream: BatchStream
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    amp: Amp
    ctx: D.DistContext
    total: int  # updates in the run
    accum: int  # micro-batches per update
    channels_last: bool


def build_training(stage: Stage, loaders: tuple, cfg: Config, ctx: D.DistContext, resume: dict | None
                   ) -> tuple[Training, int]:
    """Models on the device (a resumed run's weights loaded before DDP wraps them), the batch stream,
    optimiser, schedule and AMP; also the updates per epoch."""
    tc = cfg.train
    channels_last = tc.channels_last and ctx.device.type == "cuda"  # a CPU slowdown, a GPU speed-up
    stage.to(ctx.device, channels_last)
    if resume is not None:
        if resume.get("stage") != stage.name:
            raise ValueError(f"--resume: checkpoint is from the '{resume.get('stage')}' stage, not '{stage.name}'")
        stage.load_state_dict(resume["models"])
    stage.distribute(ctx, cfg.model.sync_bn)
    loader_l, loader_u = loaders
    stream = BatchStream(loader_l, loader_u if stage.uses_unlabelled else None)
    if stage.uses_unlabelled and loader_u is None:
        raise ValueError(f"the {stage.name} stage needs unlabelled images: set data.fraction/count or "
                         "data.unlabelled_list")
    total, per_epoch = total_iterations(tc, len(stream))
    optimizer = build_optimizer(stage.param_groups(), tc)
    scheduler = build_scheduler(optimizer, total, tc.poly_power, tc.warmup_iters)
    amp = build_amp(tc.amp, ctx.device)
    return Training(stage, stream, optimizer, scheduler, amp, ctx, total, tc.accum, channels_last), per_epoch
