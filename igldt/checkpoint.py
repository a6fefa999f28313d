"""Checkpoints: atomic save, safe load (`torch.load(weights_only=True)`), models from checkpoints.

Payload (docs/architecture.md): `{"format": "igldt/1", "kind": "student" | "teachers" |
"supervised" | "unimatch" | "resume", "arch", "state_dict", "classes", "palette", "mean", "std",
"ignore_index": 255, "config", "versions", ...}`; a teachers checkpoint holds
`"teachers": {"global": {arch, state_dict}, "local": {arch, state_dict}}`.
Everything in a payload is a tensor or plain Python data, so the safe unpickler can read it.
"""
from __future__ import annotations

import pickle
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import timm
import torch
from torch import nn

from igldt import __version__
from igldt.config import Config
from igldt.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from igldt.io import atomic_open
from igldt.models import build_segmenter

FORMAT = "igldt/1"
KINDS = ("student", "teachers", "supervised", "unimatch", "resume")
MODEL_KINDS = ("student", "supervised", "unimatch", "resume")  # kinds `load_model` accepts (need arch + state_dict)


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or of the wrong kind; one line, names the file."""


def versions() -> dict[str, str]:
    return {"igldt": str(__version__), "torch": str(torch.__version__), "timm": str(timm.__version__),
            "python": platform.python_version(), "numpy": np.__version__}


def plain(obj: Any) -> Any:
    """Numpy arrays/scalars, tuples and Paths -> JSON-like Python data (safe to unpickle)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, str)):
        return str(obj)  # also turns str subclasses (torch's TorchVersion) into plain str
    return obj


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write `payload` to `path` atomically: a temp file in the same folder, flushed and fsynced,
    then `os.replace`, so a crash at any moment leaves either the old file or the new one, whole."""
    with atomic_open(path, "wb") as f:
        torch.save(dict(payload), f)
    return Path(path)


def load_checkpoint(path: str | Path, kinds: Iterable[str] | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Read an igldt checkpoint with the safe unpickler; `kinds` restricts the accepted `kind`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (--weights / --teachers)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for bad files: Unpickling/Runtime/EOF/Key errors
        if isinstance(e, pickle.UnpicklingError) and "weights only load failed" in str(e).lower():
            raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain data; "
                                  f"refusing to unpickle it (only igldt checkpoints are loaded)") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file "
                              f"({type(e).__name__}); re-save or re-download it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} is not an {FORMAT} checkpoint (format: {found!r}); "
                              f"a bare state dict belongs in weights=PATH of a backbone")
    kind = ckpt.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"checkpoint {path} has unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kinds is not None and kind not in tuple(kinds):
        raise CheckpointError(f"checkpoint {path} is a '{kind}' checkpoint; this needs {' or '.join(kinds)}")
    return ckpt


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DDP (`.module`) and/or torch.compile (`._orig_mod`) wrappers."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def clean_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU state dict without DDP (`module.`) or torch.compile (`_orig_mod.`) prefixes."""
    model = unwrap(model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def model_payload(model: nn.Module, arch: Mapping | None = None) -> dict:
    """`{"arch", "state_dict"}` of one network (arch defaults to `model.arch`)."""
    return {"arch": plain(dict(arch if arch is not None else unwrap(model).arch)), "state_dict": clean_state_dict(model)}


def _meta(dataset_meta: Mapping, config: Config | None) -> dict:
    """classes / palette / mean / std / ignore_index from the dataset, falling back to config.data."""
    mean, std = (config.data.mean, config.data.std) if config is not None else (IMAGENET_MEAN, IMAGENET_STD)
    classes = list(dataset_meta.get("classes", []))
    palette = dataset_meta.get("palette")
    return {
        "classes": [str(c) for c in classes],
        "palette": plain(palette) if palette is not None else None,
        "mean": [float(v) for v in dataset_meta.get("mean", mean)],
        "std": [float(v) for v in dataset_meta.get("std", std)],
        "ignore_index": IGNORE_INDEX,
        "config": config.to_dict() if config is not None else None,
        "versions": versions(),
    }


def student_payload(model: nn.Module, arch: Mapping | None, dataset_meta: Mapping,
                    config: Config | None = None, kind: str = "student", **extra: Any) -> dict:
    """Export-ready payload: arch, state_dict, classes, palette, mean, std, stride, config, versions.

    `dataset_meta`: `{"classes", "palette"}` (a SegDataset's attributes), optionally `mean`/`std`
    (default: `config.data.mean/std`). `extra` (e.g. `miou`, `iteration`) is stored as plain data.
    """
    if kind not in KINDS or kind == "teachers":
        raise ValueError(f"student_payload kind must be student, supervised, unimatch or resume, got '{kind}'")
    p = model_payload(model, arch)
    return {"format": FORMAT, "kind": kind, **p, "stride": int(getattr(unwrap(model), "stride", 32)),
            **_meta(dataset_meta, config), **plain(extra)}


def teachers_payload(global_model: nn.Module, local_model: nn.Module, dataset_meta: Mapping,
                     config: Config | None = None, **extra: Any) -> dict:
    """Both stage-1 teachers in one file: `teachers: {global: {arch, state_dict}, local: {...}}`."""
    return {"format": FORMAT, "kind": "teachers",
            "teachers": {"global": model_payload(global_model), "local": model_payload(local_model)},
            **_meta(dataset_meta, config), **plain(extra)}


def _build(arch: Mapping, state_dict: Mapping, path: Path, device: str | torch.device) -> nn.Module:
    try:
        model = build_segmenter(**dict(arch), pretrained=False)
    except TypeError as e:
        raise CheckpointError(f"checkpoint {path}: arch {dict(arch)} is not understood ({e})") from None
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)[:200]
        raise CheckpointError(f"checkpoint {path}: weights do not fit arch {arch.get('backbone')} ({first})") from None
    return model.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(DeepLabV3Plus in eval mode on `device`, meta = the checkpoint minus its weights)."""
    path = Path(path)
    ckpt = load_checkpoint(path, kinds=MODEL_KINDS)
    if "arch" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} ('{ckpt['kind']}') carries no model arch/state_dict")
    model = _build(ckpt["arch"], ckpt["state_dict"], path, device)
    return model, {k: v for k, v in ckpt.items() if k != "state_dict"}


def load_teachers(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, dict]:
    """(global teacher, local teacher, meta) from a teachers checkpoint, both in eval mode."""
    path = Path(path)
    ckpt = load_checkpoint(path, kinds=("teachers",))
    t = ckpt.get("teachers", {})
    if not all(r in t and "arch" in t[r] and "state_dict" in t[r] for r in ("global", "local")):
        raise CheckpointError(f"checkpoint {path}: 'teachers' must hold global and local arch + state_dict")
    g = _build(t["global"]["arch"], t["global"]["state_dict"], path, device)
    l = _build(t["local"]["arch"], t["local"]["state_dict"], path, device)
    meta = {k: v for k, v in ckpt.items() if k != "teachers"}
    meta["teachers"] = {r: {"arch": t[r]["arch"]} for r in ("global", "local")}
    return g, l, meta
