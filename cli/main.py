"""`igldt`: one verb per job. Commands load lazily so `igldt infer` on an edge box never imports torch."""
from __future__ import annotations

import contextlib
import importlib
from typing import Callable

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
    "suggest": ("suggest:suggest", "Rank the unlabelled pool: which images to label next (teachers' disagreement)."),
    "split": ("data:split", "Write a seeded labelled/unlabelled split of a training set."),
    "check-data": ("data:check_data", "Validate a dataset and report every problem at once."),
}


# The core install is the torch-free runtime; the rest comes in extras (pyproject.toml). A verb that
# reaches a module of a missing extra says which one to install instead of a traceback.
EXTRA_OF_MODULE = {
    "torch": "train", "torchvision": "train", "timm": "train", "matplotlib": "train",
    "onnx": "export", "onnxscript": "export", "onnxslim": "export",
    "onnxruntime": "cpu", "tensorrt": "gpu", "cuda": "gpu",
}
# Verbs that export need the whole `export` extra (it includes `train`): name it at the first miss.
EXPORTING_VERBS = ("export", "demo")


def missing_extra_message(verb: str, error: ModuleNotFoundError) -> str | None:
    """One line naming the extra that brings `error.name`, or None for a module no extra provides."""
    module = (error.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    if extra == "train" and verb in EXPORTING_VERBS:
        extra = "export"
    alternative = " (or igldt[gpu] on an NVIDIA box)" if extra == "cpu" else ""
    return f"igldt {verb} needs {module}, which comes with the {extra} extra: pip install \"igldt[{extra}]\"{alternative}"


@contextlib.contextmanager
def missing_extra_as_error(verb: Callable[[], str]):
    """A missing module that an extra brings becomes the one-line error naming that extra, whether
    the verb's module imports it (listing the verb) or the verb imports it when it runs. `verb` is
    asked after the error: the group learns which verb runs only once it has resolved it."""
    try:
        yield
    except ModuleNotFoundError as e:
        message = missing_extra_message(verb(), e)
        if message is None:
            raise
        raise click.ClickException(message) from None


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context):
        with missing_extra_as_error(lambda: ctx.invoked_subcommand or ""):
            return super().invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        with missing_extra_as_error(lambda: name):
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
