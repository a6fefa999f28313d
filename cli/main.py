"""`igldt`: one verb per job. Commands load lazily so `igldt infer` on an edge box never imports torch."""
from __future__ import annotations

import importlib

import click

from igldt import __version__

# verb -> ("module:function" inside igldt.cli, one-line help shown by `igldt --help` without importing it)
COMMANDS = {
    "demo": ("demo:demo", "Run the whole pipeline on the embedded demo data, in minutes on a CPU."),
    "train": ("train:train", "Train a stage: supervised | teachers | student."),
    "evaluate": ("evaluate:evaluate", "mIoU of a checkpoint or engine on a dataset split; parity against PyTorch."),
    "export": ("export:export", "Export a student checkpoint to ONNX (fp32/fp16/int8) or a TensorRT engine."),
    "infer": ("infer:infer", "Segment images, folders, videos, cameras or streams."),
    "benchmark": ("benchmark:benchmark", "Latency, FPS, size and mIoU of several artefacts side by side."),
    "split": ("data:split", "Write a seeded labelled/unlabelled split of a training set."),
    "check-data": ("data:check_data", "Validate a dataset and report every problem at once."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(f"igldt.cli.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="igldt")
def cli() -> None:
    """IGL-DT semi-supervised segmentation: train dual teachers and a student, deploy the student.

    \b
    Start here:   igldt demo
    Your data:    igldt check-data --data ROOT --dataset folder
                  igldt split --data ROOT --dataset folder --fraction 1/8
                  igldt train --stage teachers --preset camvid-cpu
                  igldt train --stage student --teachers runs/teachers/best.pt
                  igldt export --weights runs/student/best.pt --format onnx
                  igldt infer video.mp4 --model student.onnx
    """


if __name__ == "__main__":
    cli()
