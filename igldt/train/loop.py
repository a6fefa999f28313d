"""One training loop for all three stages (supervised, teachers, student).

`fit` is the loop: pairs of (labelled, unlabelled) batches -> `stage.step` -> backward (AMP,
gradient accumulation, DDP) -> SGD step with poly decay (`optimisation_step`) -> logging, periodic
validation (`make_validator`, validation.py), best and last checkpoints (`Checkpointer`,
checkpointing.py, which also holds `restore`). What it steps is a `Training` (training.py).
`train` builds everything from a config (data, models, stage, devices) and calls `fit`; the CLI
(`igldt train`) and the demo call `train`.

`last.pt` (kind "resume") is written at each validation, every `train.save_every` iterations,
every `train.save_every_s` seconds, on Ctrl-C/SIGTERM and at the end, always atomically: a
SIGKILL at any moment leaves the previous complete checkpoint, and resuming from it reproduces the
uninterrupted run's weights exactly (tests/train/test_kill.py).

Iterations t are optimiser updates, counted from 1 (the swap of (11) reads t); with gradient
accumulation all micro-batches of one update share t.
"""
from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from igldt.checkpoint import load_checkpoint
from igldt.class_balance import median_frequency_weights
from igldt.config import Config, TrainConfig
from igldt.data.loaders import build_train_loaders, build_val_set
from igldt.io import write_text_atomic
from igldt.train import distributed as D
from igldt.train.checkpointing import Checkpointer, TrainState, remove_stale_temp_files, restore
from igldt.train.logger import RunLogger, plot_metrics, read_metrics
from igldt.train.stages import STAGES, Stage, build_stage
from igldt.train.stream import seed_everything
from igldt.train.training import Training, build_training
from igldt.train.validation import make_validator

clock = time.monotonic  # what train.save_every_s measures (tests substitute a deterministic one)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses (train.max_nonfinite)."""


class RunDirError(RuntimeError):
    """The output folder holds a previous run."""


@dataclass
class FitResult:
    out_dir: Path
    stage: str
    iteration: int
    total: int
    interrupted: bool = False
    best_score: float | None = None
    skipped: int = 0
    last: Path | None = None
    best: Path | None = None
    history: list = field(default_factory=list)  # validation records

    @property
    def finished(self) -> bool:
        return not self.interrupted and self.iteration >= self.total


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
class _StopRequest:
    """Ctrl-C / SIGTERM: the first one asks the loop to stop after the current step and save a
    resumable checkpoint; a second one stops at once (KeyboardInterrupt, nothing saved)."""

    def __init__(self, say: Callable[[str], None]):
        self.requested = False
        self._say = say
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers: main thread only
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._say(f"{signal.Signals(signum).name}: finishing this step, then saving a resumable checkpoint "
                  "(press Ctrl-C again to stop at once without saving)")

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def _to_device(batch: dict | None, device: torch.device, channels_last: bool) -> dict | None:
    if batch is None:
        return None
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _no_sync(stage: Stage, skip_sync: bool):
    """DDP: accumulate gradients locally on all but the last micro-batch of an update."""
    if not skip_sync:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for m in stage.run.values():
        if isinstance(m, torch.nn.parallel.DistributedDataParallel):
            stack.enter_context(m.no_sync())
    return stack


def _truncate_log(path: Path, iteration: int) -> None:
    """A resumed run redoes the iterations after its checkpoint: drop their old log lines (and a
    line torn by a kill, which the resumed run's lines would otherwise be appended to)."""
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if r.get("iteration", 0) <= iteration]
    text = "".join(json.dumps(r) + "\n" for r in keep)
    if path.read_text() != text:
        write_text_atomic(path, text)


def _open_out_dir(out_dir: Path, iteration: int, resumed: bool) -> None:
    """Rank 0, before the first step: the folder, its log cut back to `iteration`, and (resuming)
    no temp file a killed checkpoint write left."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _truncate_log(out_dir / "metrics.jsonl", iteration)
    if resumed:
        remove_stale_temp_files(out_dir)


def save_intervals(train: TrainConfig) -> tuple[int, float]:
    """(train.save_every iterations, train.save_every_s seconds); 0 turns either off."""
    every, seconds = train.save_every, train.save_every_s
    if every < 0 or seconds < 0:
        raise ValueError(f"train.save_every={every}, train.save_every_s={seconds}: use 0 (off) or a positive number")
    return every, seconds


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def optimisation_step(train: Training, state: TrainState, stop: _StopRequest,
                      say: Callable[[str], None]) -> float | None:
    """Update t = state.it + 1: `accum` micro-batches under autocast (DDP syncs the gradients on the
    last one only), then the optimiser and schedule step. A non-finite loss on any rank skips the
    update on every rank, counted in `state.skipped` and `state.consecutive`; a finite update adds
    its loss terms to the log window. Returns the learning rate the update used, or None when a stop
    request broke off the micro-batches (nothing stepped, `state.it` unchanged)."""
    t, accum, amp, optimizer = state.it + 1, train.accum, train.amp, train.optimizer
    optimizer.zero_grad(set_to_none=True)
    finite, terms_step = True, {}
    try:
        for micro in range(accum):
            batch_l, batch_u = train.stream.next()
            batch_l = _to_device(batch_l, train.ctx.device, train.channels_last)
            batch_u = _to_device(batch_u, train.ctx.device, train.channels_last)
            with _no_sync(train.stage, micro < accum - 1):
                with amp.autocast():
                    loss, terms = train.stage.step(batch_l, batch_u, t)
                ok = D.all_true(bool(torch.isfinite(loss)), train.ctx)
                finite &= ok
                # A non-finite loss still runs a backward (its gradients are thrown away) so
                # DDP's gradient all-reduce stays in step on every rank; the update is skipped.
                (amp.scaler.scale(loss / accum) if ok else loss * 0.0).backward()
            for k, v in terms.items():
                terms_step[k] = terms_step.get(k, 0.0) + float(v) / accum
    except Exception:
        if stop.requested:  # e.g. DataLoader workers killed by the same Ctrl-C
            return None
        raise
    if finite:
        amp.scaler.step(optimizer)
        amp.scaler.update()
        state.consecutive = 0
        for k, v in terms_step.items():
            acc = state.window.setdefault(k, [0.0, 0])
            acc[0] += v
            acc[1] += 1
    else:
        optimizer.zero_grad(set_to_none=True)
        state.skipped += 1
        state.consecutive += 1
        say(f"iteration {t}: non-finite loss, update skipped ({state.consecutive} in a row, {state.skipped} in all)")
    lr = optimizer.param_groups[0]["lr"]  # the rate this update used
    with warnings.catch_warnings():  # a skipped first update makes torch warn about the order
        warnings.simplefilter("ignore", UserWarning)
        train.scheduler.step()
    state.it = t
    train.stream.commit()
    return lr


def fit(stage: Stage, loaders: tuple, cfg: Config, out_dir: str | Path, *, ctx: D.DistContext | None = None,
        val: Callable[[torch.nn.Module], float] | None = None, meta: dict | None = None,
        resume: dict | None = None) -> FitResult:
    """Train `stage` on `loaders` = (labelled, unlabelled | None) and write checkpoints to `out_dir`.

    `val(model) -> mIoU` validates; it runs on every rank (`make_validator` shards the images and
    sums the ranks' confusion matrices) and rank 0's score is the one used. `meta` ({"dataset_meta":
    {classes, palette}, "config"}) goes into best.pt; `resume` is a loaded last.pt.
    """
    tc, ctx, out_dir = cfg.train, ctx or D.DistContext(), Path(out_dir)
    train, per_epoch = build_training(stage, loaders, cfg, ctx, resume)
    total, val_every, log_every = train.total, tc.val_every or per_epoch, max(1, tc.log_every)
    max_nonfinite, (save_every, save_every_s) = tc.max_nonfinite, save_intervals(tc)
    if resume is None:
        seed_everything(tc.seed + ctx.rank)
        state = TrainState()
    else:
        state = restore(train, resume)
    if ctx.is_main:
        _open_out_dir(out_dir, state.it, resumed=resume is not None)
    log = RunLogger(out_dir, total, start=state.it, enabled=ctx.is_main, desc=stage.name)
    say = log.message if ctx.is_main else (lambda s: None)
    ckpt = Checkpointer(out_dir, train, state, cfg, meta, every=save_every, every_s=save_every_s, clock=clock)

    stage.train()
    with _StopRequest(say) as stop:
        try:
            while state.it < total:
                if not D.all_true(not stop.requested, ctx):  # every rank stops at the same step
                    break
                lr = optimisation_step(train, state, stop, say)
                if lr is None:
                    break
                it = state.it
                log.advance()
                if state.consecutive >= max_nonfinite:
                    ckpt.save_last()
                    raise NonFiniteLossError(
                        f"{state.consecutive} non-finite losses in a row (train.max_nonfinite={max_nonfinite}) at "
                        f"iteration {it}: lower train.lr, try train.amp=off, or check the data; weights before "
                        f"the first bad step are in {out_dir / 'last.pt'}")
                if it % log_every == 0 or it == total:
                    means = D.all_reduce_mean({k: a / n for k, (a, n) in state.window.items()}, ctx)
                    log.train(it, train.stream.epoch, lr, means, state.skipped)
                    state.window = {}
                if val is not None and (it % val_every == 0 or it == total):
                    ckpt.validate(val, log)
                    ckpt.save_last()
                elif it < total and ckpt.due():  # independent of validation: a kill loses little
                    ckpt.save_last()
        finally:
            log.close()
    interrupted = state.it < total  # the loop breaks off early only on a stop request
    if not interrupted and val is None:  # nothing to choose by: the final weights are the export-ready ones
        ckpt.save_best(None)
    ckpt.save_last()
    if ctx.is_main:
        plot_metrics(out_dir / "metrics.jsonl", out_dir / "metrics.png")
    return FitResult(out_dir, stage.name, state.it, total, interrupted=interrupted, best_score=state.best,
                     skipped=state.skipped, last=ckpt.last, best=ckpt.best, history=state.history)


# ---------------------------------------------------------------------------------------------
# from a config
# ---------------------------------------------------------------------------------------------
def prepare_run_dir(out_dir: Path, resuming: bool, exist_ok: bool) -> None:
    """Refuse to write into a folder holding a previous run unless resuming or told so."""
    if resuming or exist_ok or not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise RunDirError(f"--out {out_dir} is a file; pass a folder")
    names = sorted(p.name for p in out_dir.iterdir())
    if names:
        raise RunDirError(f"--out {out_dir} already holds a run ({', '.join(names[:4])}"
                          f"{', ...' if len(names) > 4 else ''}); continue it with --resume {out_dir / 'last.pt'}, "
                          "overwrite it with --exist-ok, or choose another --out")


def default_out_dir(stage: str) -> Path:
    return Path("runs") / stage


def label_weights(cfg: Config, labelled_loader, classes: int) -> torch.Tensor | None:
    """Median-frequency class weights over the labelled images, where `method.sup_loss` ((6)) or
    `method.pseudo_loss` ((7), (12)) asks for them."""
    if "median_freq" not in (cfg.method.sup_loss, cfg.method.pseudo_loss):
        return None
    ds = labelled_loader.dataset.ds
    return median_frequency_weights((ds.load_mask(i) for i in range(len(ds))), classes)


def train(cfg: Config, stage: str, out_dir: str | Path | None = None, *, teachers: str | Path | None = None,
          resume: str | Path | dict | None = None, device: str = "auto", exist_ok: bool = False) -> FitResult:
    """Train one stage from a config: data (checked), models, validation on data.val_split, `fit`.

    Works under `torchrun` (one process per device; rank 0 logs and saves). `resume` is a last.pt
    path (or an already loaded one); its folder is the default `out_dir`.
    """
    if stage not in STAGES:
        raise ValueError(f"--stage {stage}: choose one of {', '.join(STAGES)}")
    resume_ckpt = resume
    if isinstance(resume, (str, Path)):
        resume_ckpt = load_checkpoint(resume, kinds=("resume",))
        out_dir = out_dir or Path(resume).parent
    out_dir = Path(out_dir or default_out_dir(stage))
    ctx = D.setup(device)
    try:
        result = _train_in_group(cfg, stage, out_dir, teachers, resume_ckpt, exist_ok, ctx)
    except BaseException:
        D.teardown(ctx, failed=True)
        raise
    D.teardown(ctx)
    return result


def _train_in_group(cfg: Config, stage: str, out_dir: Path, teachers, resume_ckpt, exist_ok: bool,
                    ctx: D.DistContext) -> FitResult:
    """`train`'s body, every rank inside the process group (its DDP modules freed before the group is left)."""
    if ctx.is_main:
        prepare_run_dir(out_dir, resume_ckpt is not None, exist_ok)
    D.barrier(ctx)
    seed_everything(cfg.train.seed)  # identical model initialisation on every rank
    loaders = build_train_loaders(cfg, ctx.rank, ctx.world, views=STAGES[stage].views(cfg))  # refuses bad data
    val_set = build_val_set(cfg.data)
    classes = list(val_set.classes)
    built = build_stage(cfg, stage, len(classes), teachers, label_weights(cfg, loaders[0], len(classes)))
    val = make_validator(cfg, val_set.ds, ctx, figures=out_dir)
    meta = {"dataset_meta": {"classes": classes, "palette": val_set.ds.palette}, "config": cfg}
    return fit(built, loaders, cfg, out_dir, ctx=ctx, val=val, meta=meta, resume=resume_ckpt)
