"""`igldt export` end to end: checkpoint -> ONNX (fp32/fp16/int8 Q/DQ) or TensorRT plan, plus sidecar.

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
from typing import Callable

from igldt.constants import IMAGENET_MEAN, IMAGENET_STD

from .onnx import ExportError, check_imgsz

FORMATS = ("onnx", "trt")
PRECISIONS = ("fp32", "fp16", "int8")
OUTPUTS = ("logits", "labels")


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    meta: dict
    check: dict | None = None
    notes: list[str] = field(default_factory=list)


def default_out(weights: Path, fmt: str, precision: str) -> Path:
    suffix = ".onnx" if fmt == "onnx" else ".plan"
    tag = "" if precision == "fp32" else f"_{precision}"
    return weights.with_name(f"{weights.stem}{tag}{suffix}")


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


def _default_imgsz(meta: dict, stride: int) -> tuple[int, int]:
    crop = ((meta.get("config") or {}).get("data") or {}).get("crop")
    h, w = (crop if crop and len(crop) == 2 else (512, 512))
    return -(-int(h) // stride) * stride, -(-int(w) // stride) * stride


def run_export(weights: str | Path, fmt: str = "onnx", precision: str = "fp32", *, calib: str | Path | None = None,
               imgsz: tuple[int, int] | None = None, dynamic: bool = True, output: str = "logits",
               bake_preprocess: bool = False, force: bool = False, out: str | Path | None = None,
               calib_count: int = 64, calib_method: str = "minmax", int8_target: str | None = None,
               check_count: int = 8, max_batch: int = 8,
               workspace_gib: float = 4.0, timing_cache: str | Path | None = None, opset: int | None = None,
               demo_root: str | Path | None = None, echo: Callable[[str], None] = print) -> ExportResult:
    weights = Path(weights)
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: choose onnx or trt")
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision}: choose fp32, fp16 or int8")
    if output not in OUTPUTS:
        raise ExportError(f"--output {output}: choose logits or labels")
    if fmt == "trt":  # say so before minutes of export work, in one line
        from .tensorrt import tensorrt_status
        ok, reason = tensorrt_status()
        if not ok:
            raise ExportError(f"--format trt: cannot build a TensorRT engine here: {reason}; "
                              f"export --format onnx here and build the engine on the GPU box")
    if not weights.is_file():
        raise ExportError(f"--weights {weights}: file not found; train a student first (igldt train --stage student)")
    out_path = Path(out) if out else default_out(weights, fmt, precision)
    from igldt.runtime.metadata import sidecar_path
    side = sidecar_path(out_path)
    for p in (out_path, side):
        if p.exists() and not force:
            raise ExportError(f"{p} exists; pass --force to overwrite it or --out another path")
    if out_path.exists() and out_path.is_dir():
        raise ExportError(f"--out {out_path} is a folder; give a file path such as {out_path / 'student.onnx'}")
    out_path.parent.mkdir(parents=True, exist_ok=True)

    import onnx

    from igldt.checkpoint import load_model
    from igldt.models import SegmentationExportWrapper

    from . import metadata as md
    from .onnx import OPSET, compare_with_torch, export_onnx, save_model, to_fp16

    model, ckpt = load_model(weights, device="cpu")
    stride = int(getattr(model, "stride", None) or ckpt.get("stride") or 32)
    imgsz = check_imgsz(imgsz, stride) if imgsz else _default_imgsz(ckpt, stride)
    mean, std = ckpt.get("mean") or list(IMAGENET_MEAN), ckpt.get("std") or list(IMAGENET_STD)
    wrapper = SegmentationExportWrapper(model, output=output, bake_preprocess=bake_preprocess, mean=mean, std=std)
    notes: list[str] = []

    if dynamic:
        size_range = ((stride, stride), None)
        batch_range = (1, None)
    else:
        size_range = (imgsz, imgsz)
        batch_range = (1, 1)
    if fmt == "trt":
        lo = (max(stride, imgsz[0] // 2 // stride * stride), max(stride, imgsz[1] // 2 // stride * stride))
        hi = (imgsz[0] * 2, imgsz[1] * 2)
        size_range = (lo, hi) if dynamic else (imgsz, imgsz)
        batch_range = (1, max_batch if dynamic else 1)
    meta = md.build_metadata(ckpt, weights, fmt="onnx" if fmt == "onnx" else "tensorrt", precision=precision,
                             output=output, bake_preprocess=bake_preprocess, stride=stride, dynamic=dynamic,
                             imgsz=imgsz, size_range=size_range, batch_range=batch_range)
    meta["opset"] = opset or OPSET
    meta["exporter"] = "torch.onnx.export(dynamo=True)"

    echo(f"Exporting {weights} ({ckpt.get('arch', {}).get('backbone')}, {len(meta['classes'])} classes) -> {out_path} "
         f"[{fmt} {precision}, output {output}{', baked preprocessing' if bake_preprocess else ''}, "
         f"{'dynamic' if dynamic else 'static'} {imgsz[0]}x{imgsz[1]}]")
    calib_set = None
    if precision == "int8":  # find calibration images before minutes of export work
        from .images import calibration_images
        calib_set = calibration_images(ckpt, calib, calib_count)
    proto = export_onnx(wrapper, imgsz=imgsz, stride=stride, dynamic=dynamic, bake_preprocess=bake_preprocess,
                        opset=meta["opset"], batch=1)

    staged = Staged()
    tmpdir = tempfile.TemporaryDirectory(prefix=".igldt-export-", dir=out_path.parent)
    try:
        work = Path(tmpdir.name)
        onnx_final = out_path if fmt == "onnx" else work / f"{out_path.stem}.onnx"
        onnx_tmp = staged.temp_for(onnx_final) if fmt == "onnx" else onnx_final
        if precision == "fp16":
            proto = to_fp16(proto)
        if precision == "int8":
            from .quantize import quantize_int8
            loaders, _, desc = calib_set
            echo(f"Calibrating INT8 on {desc} ({calib_method})")
            fp32 = work / "fp32.onnx"
            save_model(proto, fp32)
            meta_q = dict(meta, input=dict(meta["input"]))
            # the engine that will run the graph decides its form (export/quantize.py)
            target = int8_target or ("tensorrt" if fmt == "trt" else "ort")
            report = quantize_int8(fp32, onnx_tmp, loaders, meta_q, calib_method, target)
            meta["calibration"] = {"source": desc, **report}
            proto = onnx.load(str(onnx_tmp))
        md.embed_in_onnx(proto, meta)
        save_model(proto, onnx_tmp)

        check = None
        artefact_tmp = onnx_tmp
        if fmt == "trt":
            from .tensorrt import build_engine
            artefact_tmp = staged.temp_for(out_path)
            n_max = batch_range[1] or 1
            info = build_engine(onnx_tmp, artefact_tmp, input_name=meta["input"]["name"],
                                layout=meta["input"]["layout"], min_shape=(1, *size_range[0]),
                                opt_shape=(1, *imgsz), max_shape=(n_max, *size_range[1]),
                                workspace_gib=workspace_gib,
                                timing_cache=timing_cache or out_path.with_name(".igldt-timing.cache"))
            meta["tensorrt"] = info
            meta["onnx_sha256"] = md.file_sha256(onnx_tmp)
        # the sidecar of the temp artefact is its temp name + .json: the check below reads it like a user would
        side_tmp = md.sidecar_path(artefact_tmp)
        staged.moves.append((side_tmp, side))
        md.write_json_atomic(side_tmp, meta)

        if check_count > 0:
            from .images import check_images
            try:
                imgs, names, desc = check_images(ckpt, calib, check_count, demo_root)
                images = [f() for f in imgs]
            except Exception as e:  # the artefact is fine; only the check data is not reachable
                images, desc = [], ""
                notes.append(f"check against PyTorch skipped: no images ({str(e).splitlines()[0][:200]})")
            if images:
                check = compare_with_torch(model, artefact_tmp, images, names,
                                           device="cpu" if fmt == "onnx" else "auto")
                check["source"] = desc
                meta["check"] = check
                md.write_json_atomic(side_tmp, meta)
        staged.commit()
    finally:
        staged.cleanup()
        tmpdir.cleanup()
    return ExportResult(out_path, side, meta, check, notes)
