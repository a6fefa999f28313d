"""One training loop for all three stages (supervised, teachers, student).

`fit` is the loop: pairs of (labelled, unlabelled) batches -> `stage.step` -> backward (AMP,
gradient accumulation, DDP) -> SGD step with poly decay -> logging, periodic validation, best and
last checkpoints. `train` builds everything from a config (data, models, stage, devices) and
calls `fit`; the CLI (`igldt train`) and the demo call `train`.

`last.pt` (kind "resume") is written at each validation, every `train.save_every` iterations,
every `train.save_every_s` seconds, on Ctrl-C/SIGTERM and at the end, always atomically: a
SIGKILL at any moment leaves the previous complete checkpoint, and resuming from it reproduces the
uninterrupted run's weights exactly (tests/test_train_kill.py).

Iterations t are optimiser updates, counted from 1 (the swap of (11) reads t); with gradient
accumulation all micro-batches of one update share t.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from igldt.io import write_text_atomic
from igldt.train import distributed as D
from igldt.train.logger import RunLogger, plot_metrics, read_metrics
from igldt.train.optim import build_amp, build_optimizer, build_scheduler
from igldt.train.stages import STAGES, Stage
from igldt.train.stream import BatchStream, capture_rng, restore_rng, seed_everything

RESUME_FORMAT = "igldt/1"
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


def _remove_stale_temp_files(out_dir: Path) -> None:
    """A kill during a checkpoint write leaves the atomic writer's temp file (`.last.pt.*.tmp`): drop them."""
    for name in ("last.pt", "best.pt"):
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def save_intervals(train) -> tuple[int, float]:
    """(train.save_every iterations, train.save_every_s seconds); 0 turns either off."""
    every, seconds = int(train["save_every"] or 0), float(train["save_every_s"] or 0)
    if every < 0 or seconds < 0:
        raise ValueError(f"train.save_every={every}, train.save_every_s={seconds}: use 0 (off) or a positive number")
    return every, seconds


def total_iterations(train, batches_per_epoch: int) -> tuple[int, int]:
    """(total updates, updates per epoch): train.iters when set, else train.epochs full passes."""
    accum = int(train["accum"])
    if accum < 1:
        raise ValueError(f"train.accum={accum}: must be >= 1")
    per_epoch = max(1, batches_per_epoch // accum)
    total = int(train["iters"]) if train["iters"] else int(train["epochs"]) * per_epoch
    if total < 1:
        raise ValueError("train.iters and train.epochs give no iteration to run; set one of them > 0")
    return total, per_epoch


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def fit(stage: Stage, loaders: tuple, cfg, out_dir: str | Path, *, ctx: D.DistContext | None = None,
        val: Callable[[torch.nn.Module], float] | None = None, meta: dict | None = None,
        resume: dict | None = None) -> FitResult:
    """Train `stage` on `loaders` = (labelled, unlabelled | None) and write checkpoints to `out_dir`.

    `val(model) -> mIoU` validates; it runs on every rank (`make_validator` shards the images and
    sums the ranks' confusion matrices) and rank 0's score is the one used. `meta` ({"dataset_meta":
    {classes, palette}, "config"}) goes into best.pt; `resume` is a loaded last.pt.
    """
    tc = cfg["train"]
    ctx = ctx or D.DistContext()
    out_dir = Path(out_dir)
    device = ctx.device
    channels_last = bool(tc["channels_last"]) and device.type == "cuda"  # a CPU slowdown, a GPU speed-up

    # -- models, data, optimiser ------------------------------------------------------------------
    stage.to(device, channels_last)
    if resume is not None:
        if resume.get("stage") != stage.name:
            raise ValueError(f"--resume: checkpoint is from the '{resume.get('stage')}' stage, not '{stage.name}'")
        stage.load_state_dict(resume["models"])
    stage.distribute(ctx, bool(cfg["model"]["sync_bn"]))
    loader_l, loader_u = loaders
    stream = BatchStream(loader_l, loader_u if stage.uses_unlabelled else None)
    if stage.uses_unlabelled and loader_u is None:
        raise ValueError(f"the {stage.name} stage needs unlabelled images: set data.fraction/count or "
                         "data.unlabelled_list")
    total, per_epoch = total_iterations(tc, len(stream))
    accum = int(tc["accum"])
    optimizer = build_optimizer(stage.param_groups(), tc)
    scheduler = build_scheduler(optimizer, total, float(tc["poly_power"]), int(tc.get("warmup_iters") or 0))
    amp = build_amp(tc["amp"], device)
    val_every = int(tc["val_every"]) or per_epoch
    log_every = max(1, int(tc["log_every"]))
    max_nonfinite = int(tc["max_nonfinite"])
    save_every, save_every_s = save_intervals(tc)

    it, best, skipped, consecutive, history = 0, None, 0, 0, []
    window: dict[str, list[float]] = {}  # term -> [sum, updates]: glo/loc appear on alternate iterations
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        amp.scaler.load_state_dict(resume["scaler"])
        it, best, skipped = int(resume["iteration"]), resume["best"], int(resume["skipped"])
        history = list(resume.get("history", []))
        ranks = resume["ranks"]
        mine = ranks[ctx.rank] if len(ranks) == ctx.world else ranks[0]
        if len(ranks) != ctx.world and ctx.is_main:
            print(f"warning: resuming a {len(ranks)}-process run on {ctx.world}: data order continues, "
                  "but not bit for bit")
        consecutive = int(mine.get("consecutive", 0))
        window = {k: list(v) for k, v in mine.get("window", {}).items()}  # the log's running means
        stream.restore(mine["stream"])  # re-opens the data iterators where they were
        restore_rng(mine["rng"])  # then the RNG exactly as at the checkpoint
    else:
        seed_everything(int(tc["seed"]) + ctx.rank)

    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_log(out_dir / "metrics.jsonl", it)
        if resume is not None:
            _remove_stale_temp_files(out_dir)
    log = RunLogger(out_dir, total, start=it, enabled=ctx.is_main, desc=stage.name)
    say = log.message if ctx.is_main else (lambda s: None)
    result = FitResult(out_dir, stage.name, it, total, best_score=best, skipped=skipped, history=history)

    # -- checkpoints -------------------------------------------------------------------------------
    saved = {"iteration": None, "time": clock()}  # the last last.pt written

    def save_last() -> None:
        if saved["iteration"] == it:  # e.g. the end of a run that has just validated: already on disk
            return
        # Everything a resume needs, per rank: RNG states, data positions, the log's running window
        # and the non-finite streak; plus (below) models, optimiser (momentum), schedule, AMP scaler,
        # iteration (which also fixes the student's swap parity), best score and history.
        mine = {"rng": capture_rng(), "stream": stream.state(), "consecutive": consecutive,
                "window": {k: list(v) for k, v in window.items()}}
        ranks = D.gather_object(mine, ctx)
        if ctx.is_main:
            from igldt.checkpoint import save_checkpoint
            save_checkpoint(out_dir / "last.pt", {
                "format": RESUME_FORMAT, "kind": "resume", "stage": stage.name, "iteration": it, "total": total,
                "models": stage.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": amp.scaler.state_dict(), "ranks": ranks,
                "best": best, "skipped": skipped, "history": history, "config": dict(cfg),
                "teachers": getattr(stage, "teachers_path", None)})
            result.last = out_dir / "last.pt"
        D.barrier(ctx)
        saved.update(iteration=it, time=clock())

    def save_due() -> bool:
        """A periodic last.pt now? By iteration count, or by time on any rank (all ranks agree)."""
        if save_every and it % save_every == 0:
            return True
        return bool(save_every_s) and D.any_true(clock() - saved["time"] >= save_every_s, ctx)

    def save_best(score: float | None) -> None:
        if ctx.is_main and meta is not None:
            from igldt.checkpoint import save_checkpoint
            save_checkpoint(out_dir / "best.pt", stage.export_payload({**meta, "miou": score, "iteration": it}))
            result.best = out_dir / "best.pt"
        D.barrier(ctx)

    def validate() -> None:
        nonlocal best
        scores = D.broadcast_object(stage.validate(val), ctx)  # every rank validates (its shard)
        history.append({"iteration": it, **scores})
        log.val(it, scores)
        if best is None or scores["score"] > best:
            best = scores["score"]
            save_best(best)

    # -- steps -------------------------------------------------------------------------------------
    stage.train()
    with _StopRequest(say) as stop:
        try:
            while it < total:
                if not D.all_true(not stop.requested, ctx):  # every rank stops at the same step
                    result.interrupted = True
                    break
                t = it + 1
                optimizer.zero_grad(set_to_none=True)
                finite, terms_step = True, {}
                try:
                    for micro in range(accum):
                        batch_l, batch_u = stream.next()
                        batch_l = _to_device(batch_l, device, channels_last)
                        batch_u = _to_device(batch_u, device, channels_last)
                        with _no_sync(stage, micro < accum - 1):
                            with amp.autocast():
                                loss, terms = stage.step(batch_l, batch_u, t)
                            ok = D.all_true(bool(torch.isfinite(loss)), ctx)
                            finite &= ok
                            # A non-finite loss still runs a backward (its gradients are thrown away) so
                            # DDP's gradient all-reduce stays in step on every rank; the update is skipped.
                            (amp.scaler.scale(loss / accum) if ok else loss * 0.0).backward()
                        for k, v in terms.items():
                            terms_step[k] = terms_step.get(k, 0.0) + float(v) / accum
                except Exception:
                    if stop.requested:  # e.g. DataLoader workers killed by the same Ctrl-C
                        result.interrupted = True
                        break
                    raise
                if finite:
                    amp.scaler.step(optimizer)
                    amp.scaler.update()
                    consecutive = 0
                    for k, v in terms_step.items():
                        acc = window.setdefault(k, [0.0, 0])
                        acc[0] += v
                        acc[1] += 1
                else:
                    optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    consecutive += 1
                    say(f"iteration {t}: non-finite loss, update skipped ({consecutive} in a row, {skipped} in all)")
                lr = optimizer.param_groups[0]["lr"]  # the rate this update used
                with warnings.catch_warnings():  # a skipped first update makes torch warn about the order
                    warnings.simplefilter("ignore", UserWarning)
                    scheduler.step()
                it = result.iteration = t
                stream.commit()
                log.advance()
                if consecutive >= max_nonfinite:
                    save_last()
                    raise NonFiniteLossError(
                        f"{consecutive} non-finite losses in a row (train.max_nonfinite={max_nonfinite}) at "
                        f"iteration {it}: lower train.lr, try train.amp=off, or check the data; weights before "
                        f"the first bad step are in {out_dir / 'last.pt'}")
                if it % log_every == 0 or it == total:
                    means = D.all_reduce_mean({k: a / n for k, (a, n) in window.items()}, ctx)
                    log.train(it, stream.epoch, lr, means, skipped)
                    window = {}
                if val is not None and (it % val_every == 0 or it == total):
                    validate()
                    save_last()
                elif it < total and save_due():  # independent of validation: a kill loses little
                    save_last()
        finally:
            log.close()
    if result.interrupted:
        save_last()
    else:
        if val is None:  # nothing to choose by: the final weights are the export-ready ones
            save_best(None)
        save_last()
    result.best_score, result.skipped, result.history = best, skipped, history
    if ctx.is_main:
        plot_metrics(out_dir / "metrics.jsonl", out_dir / "metrics.png")
    return result


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


def make_validator(cfg, dataset, ctx: D.DistContext,
                   figures: Path | None = None) -> Callable[[torch.nn.Module], float]:
    """`val(model) -> mIoU` (an `MIoU`: a float with its per-class IoU) over a labelled dataset (a `SegDataset`), with cfg.train's eval_mode,
    eval_crop, eval_stride and amp, to be called on every rank at once.

    Sharded: rank r scores images r, r + world, r + 2 world, ... and the ranks sum their confusion
    matrices, so each gets the whole set's mIoU (the same number one process gets) in 1/world of
    the time. Rank 0 validating alone would leave the other ranks waiting in a collective for the
    whole validation (Cityscapes' 500 images in slide mode on one GPU), towards the process group's
    timeout; here the ranks wait only for the slowest shard.
    """
    from igldt.evaluate import MODES, _pair, make_predictor
    from igldt.figures import SAMPLES, SampleKeeper, run_figure_paths, write_figures
    from igldt.metrics import MIoU, ConfusionMatrix, evaluate_predictor
    d, tc = cfg["data"], cfg["train"]
    mode, crop = tc["eval_mode"], tc["eval_crop"]
    if mode not in MODES:  # refused before training, not at the first validation hours later
        raise ValueError(f"train.eval_mode={mode!r}: choose one of {', '.join(MODES)}")
    if mode != "whole":
        crop = _pair(crop, "train.eval_crop")
    n = len(dataset.classes)
    shard = dataset if ctx.world == 1 else dataset.subset(range(ctx.rank, len(dataset), ctx.world))

    def val(model: torch.nn.Module) -> MIoU:
        predict = make_predictor(model, d["mean"], d["std"], mode, crop, tc["eval_stride"], ctx.device, tc["amp"])
        keep = SampleKeeper(SAMPLES if ctx.is_main else 0, len(shard))
        _, cm = evaluate_predictor(predict, shard, num_classes=n, center_crop=crop if mode == "center" else None,
                                   observe=keep)
        total = ConfusionMatrix(n)
        total.merge(D.all_reduce_sum(cm.matrix, ctx))
        if figures is not None and ctx.is_main:  # figures/confusion.png, samples.png: overwritten each time
            write_figures(total, keep.samples, dataset.classes, dataset.palette, *run_figure_paths(figures))
        miou = total.miou()
        per_class = {c: (None if math.isnan(v) else round(float(v), 4)) for c, v in zip(dataset.classes, total.iou())}
        return MIoU(miou if math.isfinite(miou) else 0.0, per_class)

    return val


def default_out_dir(stage: str) -> Path:
    return Path("runs") / stage


def train(cfg, stage: str, out_dir: str | Path | None = None, *, teachers: str | Path | None = None,
          resume: str | Path | dict | None = None, device: str = "auto", exist_ok: bool = False) -> FitResult:
    """Train one stage from a config: data (checked), models, validation on data.val_split, `fit`.

    Works under `torchrun` (one process per device; rank 0 logs and saves). `resume` is a last.pt
    path (or an already loaded one); its folder is the default `out_dir`.
    """
    from igldt.checkpoint import load_checkpoint
    from igldt.data.loaders import build_train_loaders, build_val_set
    from igldt.train.stages import build_stage

    if stage not in STAGES:
        raise ValueError(f"--stage {stage}: choose one of {', '.join(STAGES)}")
    resume_ckpt = resume
    if isinstance(resume, (str, Path)):
        resume_ckpt = load_checkpoint(resume, kinds=("resume",))
        out_dir = out_dir or Path(resume).parent
    out_dir = Path(out_dir or default_out_dir(stage))
    ctx = D.setup(device)
    try:
        if ctx.is_main:
            prepare_run_dir(out_dir, resume_ckpt is not None, exist_ok)
        D.barrier(ctx)
        seed_everything(int(cfg["train"]["seed"]))  # identical model initialisation on every rank
        loaders = build_train_loaders(cfg, ctx.rank, ctx.world)  # refuses data with problems
        val_set = build_val_set(cfg)
        classes = list(val_set.classes)
        built = build_stage(cfg, stage, len(classes), teachers)
        val = make_validator(cfg, val_set.ds, ctx, figures=out_dir)
        meta = {"dataset_meta": {"classes": classes, "palette": val_set.ds.palette}, "config": dict(cfg)}
        return fit(built, loaders, cfg, out_dir, ctx=ctx, val=val, meta=meta, resume=resume_ckpt)
    finally:
        D.teardown(ctx)
