"""`igldt evaluate`: mIoU of a checkpoint on a labelled split, per-class table, JSON report, figures.

Built around a generic `predict(image RGB uint8) -> HxW labels` callable scored by
`igldt.metrics.evaluate_predictor`, so other backends (an ONNX / TensorRT `--engine`, a
`--reference` checkpoint for parity) only have to supply another callable to `score()`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import click
import numpy as np

from igldt.config import Config, recorded_config
from igldt.io import write_json_atomic

MODES = ("whole", "center", "slide")


def resolve_data(recorded: Mapping[str, str | None], data: str | None, dataset: str | None, split: str | None
                 ) -> tuple[str, str, str]:
    """(root, dataset name, split): the options, else the dataset a model records (`{"root", "name",
    "val_split"}`, as a deployment sidecar writes it; `recorded_dataset` for a checkpoint)."""
    root = data or recorded.get("root")
    name = dataset or recorded.get("name") or ("folder" if root else None)
    split = split or recorded.get("val_split") or "val"
    if not root:
        raise click.UsageError("no dataset root: pass --data ROOT (the checkpoint names none)")
    return str(root), str(name), str(split)


def recorded_dataset(trained: Config | None) -> dict[str, str | None]:
    """The dataset a checkpoint's training config names, in the sidecar's shape (empty: none)."""
    if trained is None:
        return {}
    return {"root": trained.data.root, "name": trained.data.dataset, "val_split": trained.data.val_split}


def resolve_mode(trained: Config | None, mode: str | None, crop: Sequence[int] | None,
                 stride: Sequence[int] | None) -> tuple[str, list[int] | None, list[int] | None]:
    """--mode/--crop/--stride, else the training config's train.eval_mode/eval_crop/eval_stride."""
    train = trained.train if trained is not None else None
    mode = mode or (train.eval_mode if train else "whole")
    crop = list(crop) if crop else (train.eval_crop if train else None)
    stride = list(stride) if stride else (train.eval_stride if train else None)
    if mode in ("center", "slide") and not crop:
        raise click.UsageError(f"--mode {mode} needs --crop H W (the window size)")
    return mode, (list(crop) if crop and mode != "whole" else None), (list(stride) if stride and mode == "slide" else None)


def default_report_path(weights: Path, dataset: str, split: str, mode: str) -> Path:
    return weights.with_name(f"{weights.stem}.eval-{dataset}-{Path(split).stem}-{mode}.json")


def check_writable(out: Path, force: bool) -> None:
    """Refuse before any compute, not after an hour of evaluation."""
    if out.exists() and not force:
        raise click.UsageError(f"report {out} already exists; pass --force to overwrite it or --out PATH")


def score(predict: Callable[[np.ndarray], np.ndarray], ds: Any, classes: Sequence[str], *,
          center_crop: Sequence[int] | None = None, limit: int | None = None,
          observe: Callable | None = None) -> tuple[dict, Any]:
    """(report, ConfusionMatrix) of `predict` over `ds` with a progress bar; any backend."""
    from tqdm import tqdm

    from igldt.metrics import evaluate_predictor, scored_count

    with tqdm(total=scored_count(ds, limit), desc="evaluate", unit="img", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty()) as bar:
        return evaluate_predictor(predict, ds, num_classes=len(classes), classes=classes, center_crop=center_crop,
                                  limit=limit, progress=lambda i, n: bar.update(1), observe=observe)


def sample_keeper(ds: Any, limit: int | None, samples: int):
    from igldt.figures import SampleKeeper
    from igldt.metrics import scored_count

    return SampleKeeper(samples, scored_count(ds, limit))


def write_report_figures(out: Path, cm: Any, keeper: Any, classes: Sequence[str], palette: Any) -> None:
    """<report>.confusion.png and <report>.samples.png beside the JSON report."""
    from igldt.figures import figure_paths, write_figures

    written = write_figures(cm, keeper.samples, classes, palette, *figure_paths(out))
    click.echo(f"figures: {', '.join(map(str, written))}")


def evaluate_engine(engine: Path, reference: Path | None, data, dataset, split, mode, device: str,
                    limit: int | None, tolerance: float | None, out: Path | None, force: bool, samples: int) -> None:
    """--engine [--reference]: score an exported artefact (and its reference) with the deployment runtime.
    Torch-free unless one of them is a .pt; the comparison itself lives in igldt.export.parity."""
    from tqdm import tqdm

    from igldt.export.parity import compare, format_report
    from igldt.metrics import ConfusionMatrix, scored_count
    from igldt.runtime import DeployError, Predictor

    if mode not in (None, "whole"):
        raise click.UsageError("--engine is scored on whole images (as deployed); drop --mode/--crop")
    try:
        eng = Predictor(engine, device=device)
        ref = Predictor(reference, device=device) if reference else None
    except DeployError as e:
        raise click.UsageError(str(e)) from None
    recorded = eng.meta.get("dataset") or (ref.meta.get("dataset") if ref else None) or {}
    root, name, split = resolve_data(recorded, data, dataset, split)
    out = out or engine.with_name(f"{engine.name}.{'parity' if ref else 'eval'}-{name}-{Path(split).stem}.json")
    check_writable(out, force)
    ds = open_dataset(root, name, split)
    keep = sample_keeper(ds, limit, samples)
    try:
        with tqdm(total=scored_count(ds, limit), desc="evaluate", unit="img", file=sys.stderr, leave=False,
                  disable=not sys.stderr.isatty()) as bar:
            r = compare(eng, ref, ds, limit=limit, tolerance=tolerance, progress=lambda i, n: bar.update(1),
                        observe=keep)
    except (DeployError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    r.update(dataset=name, data=root, split=split, mode="whole")
    click.secho(f"{eng.describe()}\non {name}/{split}, {r['images']} images"
                + (f"; reference {ref.describe()}" if ref else ""), bold=True)
    click.echo(format_report(r))
    write_json_atomic(out, r)
    click.echo(f"report: {out}")
    write_report_figures(out, ConfusionMatrix.from_counts(r["engine"]["confusion"]), keep, r["classes"], eng.palette)
    if ref is not None and not r["passed"]:
        raise click.exceptions.Exit(1)


@click.command("evaluate")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Student / supervised checkpoint (.pt) written by `igldt train`.")
@click.option("--engine", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Exported artefact to score instead: student.onnx | student.plan | student.pt.")
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --engine: the artefact to compare with (usually the .pt it was exported from).")
@click.option("--tolerance", type=click.FloatRange(min=0), default=None,
              help="With --reference: allowed mIoU drop in points (default fp32 0.05, fp16 0.1, int8 1.0).")
@click.option("--data", default=None, metavar="ROOT", help="Dataset root. Default: the checkpoint's data.root.")
@click.option("--dataset", default=None, metavar="NAME",
              help="voc | cityscapes | camvid | folder | demo. Default: the checkpoint's data.dataset.")
@click.option("--split", default=None, help="Labelled split to score. Default: the checkpoint's data.val_split.")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="whole image, centre crop, or sliding window. Default: the checkpoint's train.eval_mode.")
@click.option("--crop", type=int, nargs=2, default=None, metavar="H W", help="Window of center/slide modes.")
@click.option("--stride", type=int, nargs=2, default=None, metavar="H W",
              help="Sliding-window step (default 2/3 of --crop; the last window touches the edge).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--amp", type=click.Choice(["off", "auto", "bf16", "fp16"]), default="off", show_default=True,
              help="Mixed precision on CUDA (off = exact fp32 numbers).")
@click.option("--limit", type=int, default=None, help="Score only the first N images (a quick check).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON report. Default: beside the weights, <stem>.eval-<dataset>-<split>-<mode>.json.")
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
@click.option("--samples", type=click.IntRange(min=0), default=4, show_default=True,
              help="Images drawn in <report>.samples.png (image, ground truth, prediction, errors), spread over "
                   "the split; 0: none. <report>.confusion.png is always written.")
def evaluate(weights: Path | None, engine: Path | None, reference: Path | None, tolerance: float | None,
             data: str | None, dataset: str | None, split: str | None, mode: str | None,
             crop: tuple[int, int] | None, stride: tuple[int, int] | None, device: str, amp: str,
             limit: int | None, out: Path | None, force: bool, samples: int) -> None:
    """Score a checkpoint on a labelled split: per-class IoU table, mIoU, JSON report, and beside it
    <report>.confusion.png (row-normalised confusion matrix) and <report>.samples.png (sample predictions).

    \b
    igldt evaluate --weights runs/student/best.pt
    igldt evaluate --weights best.pt --data ../shared/data/camvid --dataset camvid --split test
    igldt evaluate --weights best.pt --mode slide --crop 512 512 --stride 341 341
    igldt evaluate --engine best_int8.onnx --reference best.pt     (parity; exit 1 past --tolerance)
    """
    if engine is not None:
        if weights is not None:
            raise click.UsageError("give either --weights or --engine (use --reference for the checkpoint)")
        return evaluate_engine(engine, reference, data, dataset, split, mode, device, limit, tolerance, out, force,
                               samples)
    if reference is not None or tolerance is not None:
        raise click.UsageError("--reference/--tolerance go with --engine ARTEFACT")
    if weights is None:
        raise click.UsageError("pass --weights CHECKPOINT.pt or --engine ARTEFACT")
    evaluate_checkpoint(weights, data, dataset, split, mode, crop, stride, device, amp, limit, out, force, samples)


def evaluate_checkpoint(weights: Path, data, dataset, split, mode, crop, stride, device: str, amp: str,
                        limit: int | None, out: Path | None, force: bool, samples: int) -> None:
    """--weights: score a checkpoint with torch in the evaluation mode it was validated with."""
    from igldt.evaluate import default_stride, make_predictor

    dev, model, meta, trained = load_for_evaluation(weights, device)
    root, name, split = resolve_data(recorded_dataset(trained), data, dataset, split)
    mode, crop_l, stride_l = resolve_mode(trained, mode, crop, stride)
    out = out or default_report_path(weights, name, split, mode)
    check_writable(out, force)
    ds = open_dataset(root, name, split)
    classes = checked_classes(meta, ds, weights, f"{name}/{split}")
    predict = make_predictor(model, meta["mean"], meta["std"], mode, crop_l, stride_l, dev, amp)
    keep = sample_keeper(ds, limit, samples)
    try:
        report, cm = score(predict, ds, classes, center_crop=crop_l if mode == "center" else None, limit=limit,
                           observe=keep)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if mode == "slide" and stride_l is None:
        stride_l = list(default_stride(crop_l))
    report.update(weights=str(weights), arch=meta.get("arch"), dataset=name, data=root, split=split,
                  mode=mode, crop=crop_l, stride=stride_l, device=str(dev),
                  amp=amp if dev.type == "cuda" else "off", engine="torch")
    arch = meta.get("arch") or {}
    click.secho(f"{weights.name} ({arch.get('backbone')}, OS{arch.get('output_stride')}) on {name}/{split}, "
                f"mode {mode}{' ' + 'x'.join(map(str, crop_l)) if crop_l else ''}, {dev}", bold=True)
    click.echo(cm.table(classes))
    click.echo(f"{report['images']} images in {report['seconds']:.1f} s")
    write_json_atomic(out, report)
    click.echo(f"report: {out}")
    palette = meta.get("palette")
    write_report_figures(out, cm, keep, classes, ds.palette if palette is None else palette)


def load_for_evaluation(weights: Path, device: str):
    """(torch device, model, checkpoint meta, its recorded Config or None); one-line usage errors."""
    from igldt.checkpoint import CheckpointError, load_model
    from igldt.evaluate import resolve_device

    try:
        dev = resolve_device(device)
        model, meta = load_model(weights, dev)
        return dev, model, meta, recorded_config(meta)
    except (CheckpointError, ValueError) as e:  # ConfigError is a ValueError
        raise click.UsageError(str(e)) from None


def open_dataset(root: str, name: str, split: str):
    from igldt.data import DataError, build_dataset

    try:
        return build_dataset(name, root, split)
    except (DataError, OSError) as e:
        raise click.UsageError(f"--data {root} --dataset {name} --split {split}: {e}") from None


def checked_classes(meta: Mapping, ds: Any, weights: Path, where: str) -> list[str]:
    """The checkpoint's class names, refused when their number differs from the dataset's."""
    classes = list(meta.get("classes") or ds.classes)
    if len(ds.classes) != len(classes):
        raise click.UsageError(f"{weights} predicts {len(classes)} classes but {where} has "
                               f"{len(ds.classes)}; evaluate on the dataset it was trained for")
    if list(ds.classes) != classes:
        click.secho(f"warning: class names differ between {weights} and the dataset; using the checkpoint's",
                    fg="yellow", err=True)
    return classes
