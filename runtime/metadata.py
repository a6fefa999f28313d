"""Deployment metadata: a JSON sidecar beside every artefact (`student.onnx` -> `student.onnx.json`).

The sidecar is named after the full artefact name so that `student.onnx`, `student_int8.onnx` and
`student.plan` can share a folder. ONNX files also carry the same JSON in `metadata_props["igldt"]`,
so a lone `.onnx` still knows its classes and normalisation. Torch-free.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from igldt.constants import IMAGENET_MEAN, IMAGENET_STD
from igldt.palette import voc_palette

from .errors import DeployError

METADATA_KEY = "igldt"  # key in ONNX metadata_props
FORMAT = "igldt-deploy/1"


def sidecar_path(artefact: str | os.PathLike) -> Path:
    p = Path(artefact)
    return p.with_name(p.name + ".json")


def read_sidecar(artefact: str | os.PathLike) -> dict | None:
    side = sidecar_path(artefact)
    if not side.exists():
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DeployError(f"metadata sidecar {side} is unreadable ({e.__class__.__name__}); "
                          f"delete it or re-export the model") from None
    if not isinstance(data, dict):
        raise DeployError(f"metadata sidecar {side} is not a JSON object; delete it or re-export the model")
    return data


def parse_embedded(props: dict[str, str]) -> dict | None:
    raw = props.get(METADATA_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def with_defaults(meta: dict | None, source: str, num_classes: int | None = None) -> dict:
    """Fill what an artefact without igldt metadata lacks, saying so once on stderr."""
    meta = dict(meta or {})
    if not meta.get("format"):
        print(f"warning: {source} has no igldt metadata; assuming ImageNet mean/std, RGB NCHW float input "
              f"and numbered classes", file=sys.stderr)
    meta.setdefault("mean", list(IMAGENET_MEAN))
    meta.setdefault("std", list(IMAGENET_STD))
    meta.setdefault("stride", 32)
    if num_classes is not None and not meta.get("classes"):
        meta["classes"] = [f"class{i}" for i in range(num_classes)]
    meta.setdefault("input", {})
    meta["input"].setdefault("layout", "NCHW")
    meta["input"].setdefault("dtype", "float32")
    meta["input"].setdefault("color", "RGB")
    meta.setdefault("output", {})
    meta["output"].setdefault("kind", "logits")
    return meta


def default_palette(n: int) -> list[list[int]]:
    """The VOC colour map for n classes, as JSON-ready lists."""
    return voc_palette(n).tolist()
