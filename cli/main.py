"""`igldt`: one verb per job. Commands load lazily so `igldt infer` on an edge box never imports torch."""
from __future__ import annotations

import importlib

import click

from igldt import __version__

# verb -> "module:function" inside igldt.cli
COMMANDS = {
    "demo": "demo:demo",
    "train": "train:train",
    "evaluate": "evaluate:evaluate",
    "export": "export:export",
    "infer": "infer:infer",
    "benchmark": "benchmark:benchmark",
    "split": "data:split",
    "check-data": "data:check_data",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(f"igldt.cli.{module}"), attr)


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
