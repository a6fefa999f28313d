"""`igldt train`: one stage (supervised | teachers | student | unimatch) from a preset/config, resumable."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import click

from igldt.cli.common import config_options, hint, resolve_config

STAGE_NAMES = ("supervised", "teachers", "student", "unimatch")

# First-class flag -> the config keys it sets. A flag and `-o` naming the same key is refused (one
# source per key, no silent winner); `--epochs` also clears train.iters, which would override it.
FLAG_KEYS = {"iters": ("train.iters",), "epochs": ("train.epochs", "train.iters"), "batch": ("train.batch_size",),
             "imgsz": ("data.crop",), "lr": ("train.lr",), "workers": ("data.workers",), "seed": ("train.seed",)}


class ImageSize(click.ParamType):
    """`512` (square), `512x1024`, `512,1024` or `512 1024` (two tokens, see `GreedyOption`) -> [H, W]."""
    name = "H[xW]"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):  # a default or a programmatic call
            value = " ".join(str(v) for v in value)
        m = re.fullmatch(r"\s*(\d+)\s*(?:(?:[xX,]|\s)\s*(\d+))?\s*", str(value))
        if not m or int(m[1]) < 1 or (m[2] is not None and int(m[2]) < 1):
            self.fail(f"{value!r}: give one positive integer (square) or two, H W (512, 512x1024 or 512 1024)",
                      param, ctx)
        return [int(m[1]), int(m[2] or m[1])]


class GreedyOption(click.Option):
    """An option that also takes the next token when it is a bare integer: `--imgsz 512 1024`.

    Click has no optional second value; this wraps the handler click's option parser keeps for the
    option (`parser._long_opt[name].process(value, state)`, private: tests/cli/test_train.py fails
    if a click release changes it) to pull that token."""

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            handler = getattr(parser, "_long_opt", {}).get(name)
            if handler is None:
                continue
            process = handler.process

            def greedy(value, state, process=process):
                if state.rargs and state.rargs[0].isdigit():
                    value = f"{value} {state.rargs.pop(0)}"
                process(value, state)

            handler.process = greedy


def _finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", ctx, param)
    return value


def flag_overrides(flags: dict, overrides) -> list[str]:
    """`key=value` overrides for the first-class flags given (None = not given). Refuses --iters with
    --epochs, and a flag whose key an `-o` also sets, each in one line."""
    given = {k: v for k, v in flags.items() if v is not None}
    if "iters" in given and "epochs" in given:
        raise click.UsageError("--iters and --epochs both set the run's length; give one (--iters counts "
                               "optimiser updates, --epochs full passes over the (unlabelled) training set)")
    named = {item.split("=", 1)[0].strip(): item for item in overrides}
    out = []
    for flag, value in given.items():
        for key in FLAG_KEYS[flag]:
            if key in named:
                raise click.UsageError(f"--{flag} and -o {named[key]} both set {key}; give one")
        if flag == "imgsz":
            value = f"[{value[0]},{value[1]}]"
        out.append(f"{FLAG_KEYS[flag][0]}={value}")
        if flag == "epochs":
            out.append("train.iters=null")
    return out


def shown_flags(flags: dict) -> str:
    """The flags given, as typed on a command line (for the next-step hint)."""
    return "".join(f" --{k} {f'{v[0]}x{v[1]}' if k == 'imgsz' else v}" for k, v in flags.items() if v is not None)


def _config(preset, config, overrides, resume, stage):
    """The run's config: a preset/file plus overrides, or on --resume the checkpoint's own config
    (overrides still apply, e.g. -o train.iters=2000 to extend a finished run)."""
    if resume is None:
        return resolve_config(config or preset, overrides, stage), None
    from igldt.checkpoint import CheckpointError, load_checkpoint
    from igldt.config import ConfigError, config_from_dict
    if preset or config:
        raise click.UsageError("--resume continues a run with its saved config; drop --preset/--config "
                               "(use -o key=value to change a setting)")
    try:
        ckpt = load_checkpoint(resume, kinds=("resume",))
        cfg = config_from_dict(ckpt["config"], overrides)
    except (CheckpointError, ConfigError) as e:
        raise click.UsageError(f"--resume {resume}: {e}") from None
    return cfg, ckpt


def next_steps(stage: str, out: Path, source: str | None, overrides, shown: str = "") -> list[str]:
    """What to run next, with this run's own --preset/--config, flags (`shown`) and -o overrides."""
    best = out / "best.pt"
    flags = (f" --preset {source}" if source else "") + shown + "".join(f" -o {o}" for o in overrides)
    if stage == "teachers":
        return [f"igldt train --stage student --teachers {best}{flags}"]
    return [f"igldt evaluate --weights {best}",
            f"igldt export --weights {best} --format onnx"]


@click.command("train")
@click.option("--stage", type=click.Choice(STAGE_NAMES), required=True,
              help="supervised (Sup-only baseline), teachers (CPS, stage 1), student (IGL-DT, stage 2) or "
                   "unimatch (the UniMatch baseline on the student network).")
@config_options
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="A YAML config file (same keys as presets/default.yaml); alternative to --preset.")
@click.option("--teachers", type=click.Path(dir_okay=False), default=None,
              help="Teachers checkpoint for --stage student. Default: runs/teachers/best.pt when it exists.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder. Default: runs/<stage>, or the folder of --resume.")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Continue from a last.pt (models, optimiser, schedule, RNG, data position).")
@click.option("--exist-ok", is_flag=True, help="Write into a run folder that already holds a run (overwrites it).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
@click.option("--iters", type=click.IntRange(min=1), default=None,
              help="Optimiser updates in the stage (train.iters); wins over the preset's epochs.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Full passes over the training set (train.epochs; clears train.iters). Not with --iters.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Labelled images per step, as many unlabelled beside them (train.batch_size): per GPU, "
                   "or the global batch where train.global_batch is true (the paper presets).")
@click.option("--imgsz", cls=GreedyOption, type=ImageSize(), default=None,
              help="Training crop (data.crop): 512 for square, or H W as 512x1024 / 512 1024.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), callback=_finite, default=None,
              help="Base learning rate (train.lr); heads get train.head_lr_mult times it.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader worker processes per GPU (data.workers); 0 loads in the training process.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Training seed (train.seed): initialisation, data order, augmentation, dropout.")
def train(stage, preset, overrides, config_file, teachers, out, resume, exist_ok, device, **flags):
    """Train one stage. Under torchrun it trains with DDP (one process per GPU).

    The flags --iters/--epochs, --batch, --imgsz, --lr, --workers and --seed set their config key
    over the preset (and over a --resume checkpoint's config); -o KEY=VALUE sets any other key. A
    flag and an -o naming the same key are refused.

    \b
    igldt train --stage teachers --preset camvid-cpu
    igldt train --stage supervised --preset demo --iters 100 --batch 8 --imgsz 96x128 --seed 1
    igldt train --stage student --preset camvid-cpu --teachers runs/teachers/best.pt
    igldt train --stage supervised --preset voc-r50 -o data.fraction=0.125
    igldt train --stage student --resume runs/student/last.pt
    torchrun --nproc_per_node 4 -m igldt.cli.main train --stage student --preset voc-r101 ...
    """
    from igldt.checkpoint import CheckpointError
    from igldt.data import DataError
    from igldt.train.loop import NonFiniteLossError, RunDirError
    from igldt.train.loop import train as run

    cfg, ckpt = _config(preset, config_file, [*overrides, *flag_overrides(flags, overrides)], resume, stage)
    if stage == "student" and teachers is None and ckpt is None:
        default = Path("runs/teachers/best.pt")
        if not default.is_file():
            raise click.UsageError("--stage student needs --teachers PATH (train them first: "
                                   "igldt train --stage teachers ...)")
        teachers = str(default)
    if ckpt is not None and stage == "student" and teachers is None:
        teachers = ckpt.get("teachers")  # the run's own teachers checkpoint
        if not teachers:
            raise click.UsageError("--resume of a student run needs --teachers PATH (the run's teachers)")
    out = out or (resume.parent if resume else Path("runs") / stage)
    try:
        result = run(cfg, stage, out, teachers=teachers, resume=ckpt, device=device, exist_ok=exist_ok)
    except DataError as e:
        click.secho(str(e), fg="red", err=True)
        raise SystemExit(2) from None
    except (RunDirError, CheckpointError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    except NonFiniteLossError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, nothing new saved
        last = out / "last.pt"
        click.secho(f"stopped at once; {'the last saved checkpoint is ' + str(last) if last.is_file() else 'no checkpoint was saved'}",
                    fg="yellow", err=True)
        raise SystemExit(130) from None
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return
    if result.interrupted:
        cmd = f"igldt train --stage {stage} --resume {result.last}"
        click.secho(f"stopped at iteration {result.iteration}/{result.total}; resume with:", fg="yellow")
        click.echo(f"  {cmd}")
        return
    score = "n/a" if result.best_score is None else f"{100 * result.best_score:.2f}"
    click.secho(f"{stage}: {result.iteration} iterations, best val mIoU {score}%"
                f"{f', {result.skipped} non-finite steps skipped' if result.skipped else ''}", bold=True)
    click.echo(f"  best (export-ready): {result.best}\n  resumable:          {result.last}\n"
               f"  log: {out / 'metrics.jsonl'}  plot: {out / 'metrics.png'}")
    hint(*next_steps(stage, out, config_file or preset, overrides, shown_flags(flags)))
