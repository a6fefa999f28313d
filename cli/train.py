"""`igldt train`: one stage (supervised | teachers | student) from a preset/config, resumable."""
from __future__ import annotations

import os
from pathlib import Path

import click

from igldt.cli.common import config_options, hint, resolve_config

STAGE_NAMES = ("supervised", "teachers", "student")


def _config(preset, config, overrides, resume):
    """The run's config: a preset/file plus overrides, or on --resume the checkpoint's own config
    (overrides still apply, e.g. -o train.iters=2000 to extend a finished run)."""
    if resume is None:
        return resolve_config(config or preset, overrides), None
    from igldt.checkpoint import CheckpointError, load_checkpoint
    from igldt.config import ConfigError, load_config, parse_override, set_key
    if preset or config:
        raise click.UsageError("--resume continues a run with its saved config; drop --preset/--config "
                               "(use -o key=value to change a setting)")
    try:
        ckpt = load_checkpoint(resume, kinds=("resume",))
        cfg = load_config(None, (), **ckpt["config"])
        for item in overrides:
            set_key(cfg, *parse_override(item))
    except (CheckpointError, ConfigError) as e:
        raise click.UsageError(f"--resume {resume}: {e}") from None
    return cfg, ckpt


def next_steps(stage: str, out: Path, source: str | None, overrides) -> list[str]:
    """What to run next, with this run's own --preset/--config and -o flags."""
    best = out / "best.pt"
    flags = (f" --preset {source}" if source else "") + "".join(f" -o {o}" for o in overrides)
    if stage == "teachers":
        return [f"igldt train --stage student --teachers {best}{flags}"]
    return [f"igldt evaluate --weights {best}",
            f"igldt export --weights {best} --format onnx"]


@click.command("train")
@click.option("--stage", type=click.Choice(STAGE_NAMES), required=True,
              help="supervised (Sup-only baseline), teachers (CPS, stage 1) or student (IGL-DT, stage 2).")
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
def train(stage, preset, overrides, config_file, teachers, out, resume, exist_ok, device):
    """Train one stage. Under torchrun it trains with DDP (one process per GPU).

    \b
    igldt train --stage teachers --preset camvid-cpu
    igldt train --stage student --preset camvid-cpu --teachers runs/teachers/best.pt
    igldt train --stage supervised --preset voc-r50 -o data.fraction=0.125
    igldt train --stage student --resume runs/student/last.pt
    torchrun --nproc_per_node 4 -m igldt.cli.main train --stage student --preset voc-r101 ...
    """
    from igldt.checkpoint import CheckpointError
    from igldt.data import DataError
    from igldt.train.loop import NonFiniteLossError, RunDirError
    from igldt.train.loop import train as run

    cfg, ckpt = _config(preset, config_file, overrides, resume)
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
    hint(*next_steps(stage, out, config_file or preset, overrides))
