"""The metadata every exported artefact carries: in the ONNX `metadata_props` and in a JSON sidecar
beside the file (`student.onnx.json`, `student.plan.json`: named after the full artefact name so
several artefacts share a folder). The runtime reads it back (`igldt.runtime.metadata`)."""
from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from igldt.config import recorded_config
from igldt.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from igldt.io import write_json_atomic
from igldt.runtime.metadata import FORMAT, METADATA_KEY, default_palette, sidecar_path

__all__ = ["build_metadata", "embed_in_onnx", "file_sha256", "versions", "sidecar_path", "write_json_atomic"]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict:
    """Versions of what made the artefact; missing packages are recorded as null, not guessed."""
    out = {"python": platform.python_version()}
    for dist in ("igldt", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim", "tensorrt"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _listify(v):
    if v is None:
        return None
    try:
        return np.asarray(v).tolist()
    except Exception:
        return list(v)


def build_metadata(ckpt_meta: dict, checkpoint: str | Path, *, fmt: str, precision: str, output: str,
                   bake_preprocess: bool, stride: int, dynamic: bool, imgsz: tuple[int, int],
                   size_range: tuple[tuple[int, int], tuple[int, int] | None], batch_range: tuple[int, int | None],
                   input_name: str = "images") -> dict:
    """The deployment record: everything a runtime needs without the checkpoint or torch."""
    arch = ckpt_meta.get("arch") or {}
    classes = list(ckpt_meta.get("classes") or [f"class{i}" for i in range(int(arch.get("num_classes") or 0))])
    palette = _listify(ckpt_meta.get("palette")) or default_palette(len(classes))
    trained = recorded_config(ckpt_meta)
    (min_hw, max_hw) = size_range
    return {
        "format": FORMAT,
        "task": "semantic-segmentation",
        "artefact": fmt,  # onnx | tensorrt
        "precision": precision,
        "classes": classes,
        "palette": palette,
        "mean": _listify(ckpt_meta.get("mean")) or list(IMAGENET_MEAN),
        "std": _listify(ckpt_meta.get("std")) or list(IMAGENET_STD),
        "ignore_index": ckpt_meta.get("ignore_index", IGNORE_INDEX),
        "stride": int(stride),                      # input H and W must be multiples of this
        "output_stride": arch.get("output_stride"),  # the backbone's (DeepLabV3+ OS 16 or 8)
        "backbone": arch.get("backbone"),
        "input": {
            "name": input_name,
            "layout": "NHWC" if bake_preprocess else "NCHW",
            "dtype": "uint8" if bake_preprocess else "float32",
            "color": "BGR" if bake_preprocess else "RGB",
            "normalized_in_graph": bool(bake_preprocess),
            "dynamic": bool(dynamic),
            "imgsz": list(imgsz),
            "min_hw": list(min_hw),
            "max_hw": list(max_hw) if max_hw else None,
            "batch": [batch_range[0], batch_range[1]],
        },
        "output": {"name": output, "kind": output, "dtype": "uint8" if output == "labels" else "float32",
                   "layout": "NHW" if output == "labels" else "NCHW"},
        "dataset": {"name": trained.data.dataset, "root": trained.data.root,
                    "val_split": trained.data.val_split} if trained is not None else None,
        "source": {"checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint), "kind": ckpt_meta.get("kind")},
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def embed_in_onnx(model, meta: dict) -> None:
    """Put the record into `metadata_props` (one JSON entry plus a few flat keys other tools show)."""
    flat = {METADATA_KEY: json.dumps(meta, separators=(",", ":")),
            "names": json.dumps(dict(enumerate(meta["classes"]))),
            "task": meta["task"], "precision": meta["precision"]}
    keep = [p for p in model.metadata_props if p.key not in flat]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in flat.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.doc_string = f"igldt student ({meta['precision']}, {meta['output']['kind']})"
