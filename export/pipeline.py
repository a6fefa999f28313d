"""`igldt export` end to end: checkpoint -> ONNX (fp32/fp16/int8 Q/DQ) or TensorRT plan, plus sidecar.

`ExportSpec.from_args` turns the CLI arguments into one validated, frozen description of the export
(every refusal a one-line `ExportError` naming the argument, given before any slow work). `export`
then runs the steps every format shares (load the model, build the metadata, export the graph,
write the sidecar, check against PyTorch, move into place) and hands the one step that differs to
the format's writer (`_write_onnx`, `_write_trt`). `run_export` is the keyword entry the CLI, the
demo and the benchmarks call: it builds the spec and exports.

Every file is written under a temporary name in the destination folder and moved into place with
`os.replace` only after the whole export (and its check) succeeded: a failed export leaves nothing
half-written, and an existing artefact is only replaced with `force=True`.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from igldt.config import recorded_config
from igldt.constants import IMAGENET_MEAN, IMAGENET_STD
from igldt.runtime.metadata import sidecar_path

from . import metadata as md
from .images import calibration_images, check_images
from .onnx import (OPSET, ExportError, check_imgsz, compare_with_torch, export_onnx, opset_of, save_model,
                   to_fp16)
from .accuracy import MAX_FLOAT, RANK_IMAGES, fit_tolerance, graph_scorer
from .images import held_in_dataset
from .quantize import Int8Quantizer
from .tensorrt import build_engine, tensorrt_status

PRECISIONS = ("fp32", "fp16", "int8")
OUTPUTS = ("logits", "labels")


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    meta: dict
    check: dict | None = None
    notes: list[str] = field(default_factory=list)


class Staged:
    """Temp paths beside the final ones; `commit()` moves them all into place, otherwise they vanish."""

    def __init__(self):
        self.moves: list[tuple[Path, Path]] = []

    def temp_for(self, final: Path) -> Path:
        # the temp keeps the final suffix (the runtime picks its backend by suffix during the check)
        tmp = final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")
        self.moves.append((tmp, final))
        return tmp

    def commit(self):
        for tmp, final in self.moves:
            os.replace(tmp, final)
        self.moves = []

    def cleanup(self):
        for tmp, _ in self.moves:
            tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class ExportSpec:
    """What to export and how: the CLI arguments, validated and with their defaults resolved."""
    weights: Path
    fmt: str                     # onnx | trt
    precision: str               # fp32 | fp16 | int8
    out: Path                    # the artefact; its sidecar is `sidecar`
    imgsz: tuple[int, int] | None  # None: the training crop (checked against the stride once it is known)
    dynamic: bool
    output: str                  # logits | labels
    bake_preprocess: bool
    force: bool
    calib: str | Path | None     # INT8 calibration folder; also a source of check images
    calib_count: int
    calib_method: str
    int8_target: str             # ort | tensorrt: the engine the INT8 graph is shaped for
    tolerance: float | None      # INT8: allowed mIoU drop in points, layers left in float until it holds (None: off)
    max_float: float             # INT8 with a tolerance: largest share of the quantisable layers left in float
    calib_val: str | Path | None  # INT8 with a tolerance: root of held-in labelled data (default: the checkpoint's)
    check_count: int             # images for the check against PyTorch; 0 skips it
    max_batch: int               # TensorRT: largest batch of the profile
    workspace_gib: float         # TensorRT
    timing_cache: str | Path | None  # TensorRT; None: `.igldt-timing.cache` beside the artefact
    opset: int
    demo_root: str | Path | None  # demo data to take check images from when nothing else is reachable

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.out)

    @classmethod
    def from_args(cls, weights: str | Path, fmt: str = "onnx", precision: str = "fp32", *,
                  calib: str | Path | None = None, imgsz: tuple[int, int] | None = None, dynamic: bool = True,
                  output: str = "logits", bake_preprocess: bool = False, force: bool = False,
                  out: str | Path | None = None, calib_count: int = 64, calib_method: str = "minmax",
                  int8_target: str | None = None, tolerance: float | None = None, max_float: float = MAX_FLOAT,
                  calib_val: str | Path | None = None, check_count: int = 8, max_batch: int = 8,
                  workspace_gib: float = 4.0, timing_cache: str | Path | None = None, opset: int | None = None,
                  demo_root: str | Path | None = None) -> ExportSpec:
        """Validate the arguments (one-line `ExportError`s naming the argument) and resolve the defaults."""
        weights = Path(weights)
        if fmt not in FORMATS:
            raise ExportError(f"--format {fmt}: choose onnx or trt")
        if precision not in PRECISIONS:
            raise ExportError(f"--precision {precision}: choose fp32, fp16 or int8")
        if output not in OUTPUTS:
            raise ExportError(f"--output {output}: choose logits or labels")
        if fmt == "trt":  # say so before minutes of export work, in one line
            ok, reason = tensorrt_status()
            if not ok:
                raise ExportError(f"--format trt: cannot build a TensorRT engine here: {reason}; "
                                  f"export --format onnx here and build the engine on the GPU box")
        if not weights.is_file():
            raise ExportError(f"--weights {weights}: file not found; train a student first (igldt train --stage student)")
        spec = cls(weights=weights, fmt=fmt, precision=precision,
                   out=Path(out) if out else default_out(weights, fmt, precision),
                   imgsz=tuple(imgsz) if imgsz else None, dynamic=dynamic, output=output,
                   bake_preprocess=bake_preprocess, force=force, calib=calib, calib_count=calib_count,
                   calib_method=calib_method, int8_target=int8_target or FORMATS[fmt].int8_target,
                   tolerance=tolerance, max_float=max_float, calib_val=calib_val, check_count=check_count, max_batch=max_batch, workspace_gib=workspace_gib,
                   timing_cache=timing_cache, opset=opset or OPSET, demo_root=demo_root)
        for p in (spec.out, spec.sidecar):
            if p.exists() and not force:
                raise ExportError(f"{p} exists; pass --force to overwrite it or --out another path")
        if tolerance is not None and precision != "int8":
            raise ExportError(f"--tolerance applies to --precision int8 (got {precision}): fp32 and fp16 keep every layer")
        if tolerance is not None and tolerance < 0:
            raise ExportError(f"--tolerance {tolerance}: an mIoU drop in points, 0 or more")
        if not 0 <= max_float <= 1:
            raise ExportError(f"--max-float {max_float}: a share of the layers, between 0 and 1")
        if spec.out.is_dir():
            raise ExportError(f"--out {spec.out} is a folder; give a file path such as {spec.out / 'student.onnx'}")
        return spec


def default_out(weights: Path, fmt: str, precision: str) -> Path:
    tag = "" if precision == "fp32" else f"_{precision}"
    return weights.with_name(f"{weights.stem}{tag}{FORMATS[fmt].suffix}")


def _default_imgsz(meta: dict, stride: int) -> tuple[int, int]:
    trained = recorded_config(meta)
    h, w = (trained.data.crop if trained is not None else None) or (512, 512)
    return -(-h // stride) * stride, -(-w // stride) * stride


@dataclass
class _Job:
    """One export under way: what the shared steps hand the format's writer and the check."""
    spec: ExportSpec
    model: Any                   # the PyTorch student, the reference of the check
    ckpt: dict
    echo: Callable[[str], None]
    imgsz: tuple[int, int]
    size_range: tuple            # ((min H, W), (max H, W) or None): the input sizes the artefact takes
    batch_range: tuple           # (1, max batch or None)
    meta: dict                   # the deployment record, filled in as the steps go
    proto: Any                   # the fp32 ONNX graph
    calib_set: tuple | None      # (loaders, names, description) for INT8
    held_in: Any = None          # INT8 with a tolerance: (labelled dataset, description)
    notes: list[str] = field(default_factory=list)


# ---- what differs between the formats ----

def _onnx_profile(spec: ExportSpec, imgsz: tuple[int, int], stride: int):
    """Dynamic ONNX: any multiple of the stride, any batch (no upper bound recorded)."""
    return ((stride, stride), None), (1, None)


def _trt_profile(spec: ExportSpec, imgsz: tuple[int, int], stride: int):
    """Dynamic TensorRT: the engine's optimisation profile, imgsz/2 .. 2*imgsz and batch 1 .. --batch."""
    lo = (max(stride, imgsz[0] // 2 // stride * stride), max(stride, imgsz[1] // 2 // stride * stride))
    return (lo, (imgsz[0] * 2, imgsz[1] * 2)), (1, spec.max_batch)


def _write_onnx(job: _Job, staged: Staged, work: Path) -> Path:
    """--format onnx: the graph is the artefact. Returns its temp path."""
    onnx_tmp = staged.temp_for(job.spec.out)
    _write_graph(job, onnx_tmp, work)
    return onnx_tmp


def _write_trt(job: _Job, staged: Staged, work: Path) -> Path:
    """--format trt: the graph stays in the scratch folder; the engine built from it is the artefact."""

    spec, meta = job.spec, job.meta
    onnx_tmp = work / f"{spec.out.stem}.onnx"
    _write_graph(job, onnx_tmp, work)
    plan_tmp = staged.temp_for(spec.out)
    n_max = job.batch_range[1] or 1
    meta["tensorrt"] = build_engine(onnx_tmp, plan_tmp, input_name=meta["input"]["name"],
                                    layout=meta["input"]["layout"], min_shape=(1, *job.size_range[0]),
                                    opt_shape=(1, *job.imgsz), max_shape=(n_max, *job.size_range[1]),
                                    workspace_gib=spec.workspace_gib,
                                    timing_cache=spec.timing_cache or spec.out.with_name(".igldt-timing.cache"))
    meta["onnx_sha256"] = md.file_sha256(onnx_tmp)
    return plan_tmp


@dataclass(frozen=True)
class _Format:
    """One `--format`: its facts and its two functions (a static export is imgsz only, batch 1, in both)."""
    suffix: str                  # of the default output file
    artefact: str                # the sidecar's `artefact`
    int8_target: str             # default --int8-target
    check_device: str            # where the check runs the artefact
    dynamic_profile: Callable    # (spec, imgsz, stride) -> (size_range, batch_range) of a dynamic export
    write: Callable              # (job, staged, work) -> temp path of the artefact


# the engine that will run the graph decides the INT8 form (export/quantize.py)
FORMATS = {"onnx": _Format(".onnx", "onnx", "ort", "cpu", _onnx_profile, _write_onnx),
           "trt": _Format(".plan", "tensorrt", "tensorrt", "auto", _trt_profile, _write_trt)}


# ---- the steps every format shares ----

def _prepare(spec: ExportSpec, echo: Callable[[str], None]) -> _Job:
    """Load the student, build the metadata, find calibration images and export the fp32 graph."""
    # torch and timm load once an export runs: ExportSpec refuses bad arguments before their seconds of import
    from igldt.checkpoint import load_model
    from igldt.models import SegmentationExportWrapper

    fmt = FORMATS[spec.fmt]
    model, ckpt = load_model(spec.weights, device="cpu")
    stride = int(getattr(model, "stride", None) or ckpt.get("stride") or 32)
    imgsz = check_imgsz(spec.imgsz, stride) if spec.imgsz else _default_imgsz(ckpt, stride)
    mean, std = ckpt.get("mean") or list(IMAGENET_MEAN), ckpt.get("std") or list(IMAGENET_STD)
    wrapper = SegmentationExportWrapper(model, output=spec.output, bake_preprocess=spec.bake_preprocess,
                                        mean=mean, std=std)
    size_range, batch_range = (fmt.dynamic_profile(spec, imgsz, stride) if spec.dynamic
                               else ((imgsz, imgsz), (1, 1)))
    meta = md.build_metadata(ckpt, spec.weights, fmt=fmt.artefact, precision=spec.precision, output=spec.output,
                             bake_preprocess=spec.bake_preprocess, stride=stride, dynamic=spec.dynamic,
                             imgsz=imgsz, size_range=size_range, batch_range=batch_range)
    meta["exporter"] = "torch.onnx.export(dynamo=True)"

    echo(f"Exporting {spec.weights} ({ckpt.get('arch', {}).get('backbone')}, {len(meta['classes'])} classes) -> "
         f"{spec.out} [{spec.fmt} {spec.precision}, output {spec.output}"
         f"{', baked preprocessing' if spec.bake_preprocess else ''}, "
         f"{'dynamic' if spec.dynamic else 'static'} {imgsz[0]}x{imgsz[1]}]")
    calib_set = None
    held_in = None
    if spec.precision == "int8":  # find calibration (and held-in) images before minutes of export work
        calib_set = calibration_images(ckpt, spec.calib, spec.calib_count)
        if spec.tolerance is not None:
            held_in = held_in_dataset(ckpt, spec.calib_val)
    proto = export_onnx(wrapper, imgsz=imgsz, stride=stride, dynamic=spec.dynamic,
                        bake_preprocess=spec.bake_preprocess, opset=spec.opset, batch=1)
    return _Job(spec, model, ckpt, echo, imgsz, size_range, batch_range, meta, proto, calib_set, held_in)


def _write_graph(job: _Job, dest: Path, work: Path) -> None:
    """The graph at the export precision, with the metadata embedded, saved to `dest` (once)."""
    spec, meta, proto = job.spec, job.meta, job.proto
    if spec.precision == "fp16":
        proto = to_fp16(proto)
    if spec.precision == "int8":
        loaders, _, desc = job.calib_set
        job.echo(f"Calibrating INT8 on {desc} ({spec.calib_method})")
        fp32 = work / "fp32.onnx"
        save_model(proto, fp32)
        meta_q = dict(meta, input=dict(meta["input"]))
        with Int8Quantizer(fp32, loaders, meta_q, spec.calib_method, spec.int8_target) as q:
            if job.held_in is None:
                proto, exclude, accuracy = q.quantize(), [], None
            else:
                proto, exclude, accuracy = _within_tolerance(job, q, proto, work)
            meta["calibration"] = {"source": desc, **q.report(exclude)}
        if accuracy is not None:
            meta["calibration"]["accuracy"] = accuracy
    meta["opset"] = opset_of(proto)
    md.embed_in_onnx(proto, meta)
    save_model(proto, dest)


def _within_tolerance(job: _Job, q: Int8Quantizer, fp32_proto, work: Path):
    """(INT8 graph, layers left in float, the sidecar's record) with --tolerance: the accuracy-aware loop
    of export/accuracy.py scored through the runtime on the held-in images, and the speed cost of the
    float layers (latency of the final graph against the all-INT8 one)."""
    from .accuracy import latency_ms

    spec, (dataset, desc) = job.spec, job.held_in
    score = graph_scorer(job.meta, dataset, None, work)
    rank = graph_scorer(job.meta, dataset, RANK_IMAGES, work)
    job.echo(f"Scoring INT8 against fp32 on {desc} (tolerance {spec.tolerance} mIoU points)")
    candidates, names = q.candidates(), q.describe()
    proto, fit = fit_tolerance(q.quantize, score, rank, candidates, score(fp32_proto), spec.tolerance,
                               spec.max_float, echo=job.echo, names=names)
    record = {"held_in": desc, "tolerance_points": spec.tolerance, "max_float": spec.max_float, **fit.summary()}
    for r in record["ranking"]:
        r["layer"] = names.get(r["node"], r["node"])
    if fit.left_in_float:
        full, final = latency_ms(q.quantize([]), job.imgsz), latency_ms(proto, job.imgsz)
        record["latency_ms"] = {"all_int8": full, "with_float_layers": final, "imgsz": list(job.imgsz)}
        job.echo(f"Left in float: {', '.join(names.get(n, n) for n in fit.left_in_float)}; mIoU {fit.delta_points:+.2f} points; "
                 f"latency {final:.1f} ms against {full:.1f} ms all-INT8 at {job.imgsz[0]}x{job.imgsz[1]}")
    return proto, fit.left_in_float, record


def _check(job: _Job, artefact_tmp: Path, side_tmp: Path) -> dict | None:
    """The artefact (through the deployment Predictor) vs PyTorch on real images, recorded in the sidecar."""

    spec = job.spec
    if spec.check_count <= 0:
        return None
    try:
        imgs, names, desc = check_images(job.ckpt, spec.calib, spec.check_count, spec.demo_root)
        images = [f() for f in imgs]
    except Exception as e:  # the artefact is fine; only the check data is not reachable
        job.notes.append(f"check against PyTorch skipped: no images ({str(e).splitlines()[0][:200]})")
        return None
    if not images:
        return None
    check = compare_with_torch(job.model, artefact_tmp, images, names, device=FORMATS[spec.fmt].check_device)
    check["source"] = desc
    job.meta["check"] = check
    md.write_json_atomic(side_tmp, job.meta)
    return check


def export(spec: ExportSpec, echo: Callable[[str], None] = print) -> ExportResult:
    """Run the export `spec` describes; nothing is left in place unless every step succeeded."""

    spec.out.parent.mkdir(parents=True, exist_ok=True)
    job = _prepare(spec, echo)
    staged = Staged()
    tmpdir = tempfile.TemporaryDirectory(prefix=".igldt-export-", dir=spec.out.parent)
    try:
        artefact_tmp = FORMATS[spec.fmt].write(job, staged, Path(tmpdir.name))
        # the sidecar of the temp artefact is its temp name + .json: the check below reads it like a user would
        side_tmp = md.sidecar_path(artefact_tmp)
        staged.moves.append((side_tmp, spec.sidecar))
        md.write_json_atomic(side_tmp, job.meta)
        check = _check(job, artefact_tmp, side_tmp)
        staged.commit()
    finally:
        staged.cleanup()
        tmpdir.cleanup()
    return ExportResult(spec.out, spec.sidecar, job.meta, check, job.notes)


def run_export(weights: str | Path, fmt: str = "onnx", precision: str = "fp32", *,
               echo: Callable[[str], None] = print, **options) -> ExportResult:
    """The entry of the CLI, the demo and the benchmarks: `ExportSpec.from_args(weights, fmt, precision,
    **options)` (its keywords: calib, imgsz, dynamic, output, bake_preprocess, force, out, calib_count,
    calib_method, int8_target, tolerance, max_float, calib_val, check_count, max_batch, workspace_gib,
    timing_cache, opset, demo_root),
    then `export`."""
    return export(ExportSpec.from_args(weights, fmt, precision, **options), echo=echo)
