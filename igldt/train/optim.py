"""SGD with momentum, poly learning-rate decay, mixed precision settings (METHOD.md "Training settings")."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from igldt.config import TrainConfig


def build_optimizer(groups: list[dict], train: TrainConfig) -> torch.optim.SGD:
    """SGD over parameter groups; a group's `lr_mult` (head groups: train.head_lr_mult) scales train.lr."""
    params = []
    for g in groups:
        mult = float(g.get("lr_mult", 1.0))  # a parameter group's own key, not a config value
        params.append({**g, "lr_mult": mult, "lr": train.lr * mult})
    return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)


def poly_factor(iteration: int, total: int, power: float, warmup: int = 0) -> float:
    """lr(it) / lr(0) = (1 - it / total) ** power for the it-th update (it counted from 0), times a
    linear warm-up (it + 1) / warmup over the first `warmup` updates."""
    ramp = min(1.0, (iteration + 1) / warmup) if warmup > 0 else 1.0
    return ramp * max(0.0, 1.0 - iteration / max(total, 1)) ** power


def build_scheduler(optimizer, total: int, power: float, warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: poly_factor(it, total, power, warmup))


@dataclass
class Amp:
    """Autocast dtype (None = full precision) and the GradScaler (enabled only for fp16)."""
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    device_type: str

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def build_amp(mode: str, device: torch.device) -> Amp:
    """train.amp: auto (bf16 where the GPU supports it, else fp16) | bf16 | fp16 | off. CUDA only.
    (The config reads YAML's bare `off`/`on`, booleans, as off/auto when it loads.)"""
    if mode not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"train.amp={mode!r}: choose auto, bf16, fp16 or off")
    dtype = None
    if device.type == "cuda" and mode != "off":
        if mode == "auto":
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    elif device.type != "cuda" and mode in ("bf16", "fp16"):
        warnings.warn(f"train.amp={mode}: mixed precision is used on CUDA only; training in float32 on "
                      f"{device.type}", stacklevel=2)
    scaler = torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu",
                                  enabled=dtype == torch.float16)
    return Amp(dtype, scaler, device.type)
