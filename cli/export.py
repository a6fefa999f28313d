"""`igldt export`: a trained student -> ONNX (fp32/fp16/int8) or a TensorRT engine, with metadata."""
from __future__ import annotations

from pathlib import Path

import click

from .common import hint


@click.command()
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Student checkpoint (.pt).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "trt"]), default="onnx", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="fp16: fp16 ONNX (IO stays float32); int8: Q/DQ ONNX calibrated on real images.")
@click.option("--calib", type=click.Path(), default=None,
              help="Folder of real images for INT8 calibration (default: the checkpoint's unlabelled training pool).")
@click.option("--calib-count", type=int, default=64, show_default=True, help="Calibration images to use.")
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax", show_default=True,
              help="percentile and entropy keep a histogram of every activation: GBs of memory at full resolution.")
@click.option("--int8-target", type=click.Choice(["ort", "tensorrt"]), default=None,
              help="Engine the INT8 graph is shaped for: ort (uint8 activations, every op quantised; default for "
                   "--format onnx) or tensorrt (symmetric int8; default for --format trt, or an ONNX for trtexec).")
@click.option("--tolerance", type=float, default=None, metavar="POINTS",
              help="INT8: score against fp32 on the checkpoint's validation images and leave the most sensitive "
                   "layers in float, one at a time, until the mIoU drop is at most POINTS (e.g. 1.0).")
@click.option("--max-float", type=float, default=0.25, show_default=True,
              help="With --tolerance: the largest share of the quantisable layers left in float.")
@click.option("--calib-val", type=click.Path(file_okay=False), default=None, metavar="ROOT",
              help="With --tolerance: where the checkpoint's dataset (its validation split) lives, if not where it trained.")
@click.option("--imgsz", nargs=2, type=int, default=None, metavar="H W",
              help="Export / optimisation size, multiples of 32 (default: the training crop).")
@click.option("--dynamic/--static", default=True, show_default=True,
              help="Dynamic batch, height and width (TensorRT: a profile from imgsz/2 to 2*imgsz).")
@click.option("--batch", "max_batch", type=int, default=8, show_default=True, help="TensorRT: largest batch of the profile.")
@click.option("--output", type=click.Choice(["logits", "labels"]), default="logits", show_default=True,
              help="labels: argmax (uint8) inside the graph.")
@click.option("--bake-preprocess", is_flag=True, help="Graph takes uint8 BGR NHWC frames and normalises itself.")
@click.option("--workspace", type=float, default=4.0, show_default=True, help="TensorRT workspace limit (GiB).")
@click.option("--out", type=click.Path(), default=None, help="Output file (default: beside the weights).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--check-images", "check_count", type=int, default=8, show_default=True,
              help="Real images for the ONNX Runtime vs PyTorch check (0 to skip).")
def export(weights, fmt, precision, calib, calib_count, calib_method, int8_target, tolerance, max_float, calib_val,
           imgsz, dynamic, max_batch, output, bake_preprocess, workspace, out, force, check_count):
    """Export a trained student to ONNX or a TensorRT engine (plus a `<file>.json` metadata sidecar)."""
    from igldt.export.onnx import ExportError
    from igldt.export.pipeline import run_export
    from igldt.runtime.errors import DeployError

    # User paths are resolved once, here: the quantiser works in a temporary folder, where a
    # relative --calib would point nowhere.
    calib = str(Path(calib).expanduser().resolve()) if calib else None
    try:
        r = run_export(weights, fmt, precision, calib=calib, imgsz=tuple(imgsz) if imgsz else None, dynamic=dynamic,
                       output=output, bake_preprocess=bake_preprocess, force=force, out=out, calib_count=calib_count,
                       calib_method=calib_method, int8_target=int8_target, tolerance=tolerance, max_float=max_float,
                       calib_val=calib_val, check_count=check_count, max_batch=max_batch,
                       workspace_gib=workspace, echo=click.echo)
    except (ExportError, DeployError) as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:  # checkpoint / data errors from other parts already carry one clear line
        name = e.__class__.__name__
        if name in ("CheckpointError", "DataError", "ConfigError"):
            raise click.ClickException(str(e)) from None
        raise
    size = r.path.stat().st_size / 2**20
    click.secho(f"Saved {r.path} ({size:.1f} MiB) and {r.sidecar.name}", fg="green")
    if r.check:
        c = r.check
        diff = f"max |logit diff| {c['max_abs_logit_diff']:.3g}, " if c.get("max_abs_logit_diff") is not None else ""
        click.echo(f"Check vs PyTorch on {c['images']} real images ({c['source']}): "
                   f"{diff}pixel agreement {100 * c['pixel_agreement']:.2f}%")
    for note in r.notes:
        click.echo(f"Note: {note}")
    hint(f"igldt infer IMAGE_OR_VIDEO --model {r.path}",
         f"igldt evaluate --engine {r.path} --reference {weights}",
         f"igldt benchmark {weights} {r.path}")
