"""Inference modes and evaluation of a torch segmenter.

Modes (config `train.eval_mode`, CLI `--mode`):
- whole:  the full image in one forward (any size: the model pads internally);
- center: only the centred `crop` window of image *and* mask is predicted and scored;
- slide:  `crop`-sized windows every `stride` pixels, the last row/column aligned to the
          bottom/right edge; overlapping logits are averaged; images smaller than a window are
          zero-padded (the normalised mean colour) and cropped back.
The scoring loop itself is `igldt.metrics.evaluate_predictor`, shared with the torch-free engines.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from igldt.metrics import center_box, evaluate_predictor

MODES = ("whole", "center", "slide")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but no CUDA GPU is visible; use --device cpu or auto")
    return device


def autocast(device: torch.device, amp: bool | str | None) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA: auto/True -> bf16 where supported else fp16; 'bf16' | 'fp16'; off on CPU."""
    if device.type != "cuda" or amp in (None, False, "off", "none"):
        return contextlib.nullcontext()
    if amp in (True, "auto"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif amp in ("bf16", "fp16"):
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    else:
        raise ValueError(f"amp must be auto, bf16, fp16 or off, got {amp!r}")
    return torch.autocast("cuda", dtype=dtype)


def _pair(v: Sequence[int] | int | None, what: str) -> tuple[int, int]:
    if v is None:
        raise ValueError(f"{what} (H W) is required for this evaluation mode")
    h, w = (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive, got {h}x{w}")
    return h, w


def window_starts(size: int, window: int, step: int) -> list[int]:
    """Edge-aligned window offsets: 0, step, 2*step, ... and the last one ends exactly at `size`."""
    if size <= window:
        return [0]
    n = math.ceil((size - window) / step) + 1
    return sorted({min(i * step, size - window) for i in range(n)})


def default_stride(crop: Sequence[int]) -> tuple[int, int]:
    """Two thirds of the window (1/3 overlap), as common sliding-window evaluation does."""
    return max(1, int(crop[0]) * 2 // 3), max(1, int(crop[1]) * 2 // 3)


def predict_logits(model: nn.Module, image: torch.Tensor, mode: str = "whole",
                   crop: Sequence[int] | None = None, stride: Sequence[int] | None = None,
                   window_batch: int = 4) -> torch.Tensor:
    """Logits `NxCxhxw` for a normalised `Nx3xHxW` batch; `h, w` = H, W except in center mode,
    where they are the centre window's size (see `igldt.metrics.center_box`). Slide mode runs
    `window_batch` windows per forward (BatchNorm in eval mode: batching does not change results)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
    if mode == "whole":
        return model(image)["logits"]
    ch, cw = _pair(crop, "crop")
    H, W = image.shape[-2:]
    if mode == "center":
        y0, x0, y1, x1 = center_box(H, W, (ch, cw))
        return model(image[..., y0:y1, x0:x1])["logits"]
    sh, sw = _pair(stride if stride is not None else default_stride((ch, cw)), "stride")
    if sh > ch or sw > cw:
        raise ValueError(f"stride {sh}x{sw} larger than the window {ch}x{cw} would skip pixels")
    x = F.pad(image, (0, max(cw - W, 0), 0, max(ch - H, 0)))  # windows larger than the image
    Hp, Wp = x.shape[-2:]
    boxes = [(y, xx) for y in window_starts(Hp, ch, sh) for xx in window_starts(Wp, cw, sw)]
    out, count = None, torch.zeros((1, 1, Hp, Wp), device=image.device)
    n = x.shape[0]
    for i in range(0, len(boxes), window_batch):  # several windows per forward: far faster on GPU
        chunk = boxes[i:i + window_batch]
        logits = model(torch.cat([x[..., y:y + ch, xx:xx + cw] for y, xx in chunk]))["logits"].float()
        if out is None:
            out = torch.zeros((n, logits.shape[1], Hp, Wp), device=image.device)
        for j, (y, xx) in enumerate(chunk):
            out[..., y:y + ch, xx:xx + cw] += logits[j * n:(j + 1) * n]
            count[..., y:y + ch, xx:xx + cw] += 1
    return (out / count)[..., :H, :W]


def make_predictor(model: nn.Module, mean: Sequence[float], std: Sequence[float], mode: str = "whole",
                   crop: Sequence[int] | None = None, stride: Sequence[int] | None = None,
                   device: str | torch.device = "cpu", amp: bool | str | None = False
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """`predict(image HxWx3 uint8 RGB) -> HxW uint8 labels` for `evaluate_predictor`.

    Center mode is whole-image prediction here: the evaluation loop cuts image and mask first.
    """
    device = resolve_device(device)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
    infer_mode = "whole" if mode == "center" else mode

    def predict(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
        x = (x - mean_t) / std_t
        with torch.inference_mode(), autocast(device, amp):
            logits = predict_logits(model, x, infer_mode, crop, stride)
        # max(0).indices: argmax's first-maximum labels, ~6x faster than argmax(0) over channels on CPU
        return logits[0].max(0).indices.to(torch.uint8).cpu().numpy()

    return predict


def evaluate(model: nn.Module, dataset: Any, mean: Sequence[float], std: Sequence[float], mode: str = "whole",
             crop: Sequence[int] | None = None, stride: Sequence[int] | None = None,
             device: str | torch.device = "cpu", amp: bool | str | None = False,
             limit: int | None = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """mIoU / per-class IoU / pixel accuracy of `model` on a labelled `SegDataset`, one image at a time.

    The model is moved to `device`, put in eval mode and restored to its previous mode afterwards
    (so the training loop can call this). Returns the report of `evaluate_predictor` plus the settings.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
    if mode in ("center", "slide"):
        crop = _pair(crop, "crop")
    if mode == "slide":
        stride = _pair(stride if stride is not None else default_stride(crop), "stride")
    dev = resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    try:
        predict = make_predictor(model, mean, std, mode, crop, stride, dev, amp)
        n = getattr(model, "num_classes", None) or getattr(getattr(model, "module", None), "num_classes", None)
        report, _ = evaluate_predictor(predict, dataset, num_classes=n, limit=limit, progress=progress,
                                       center_crop=crop if mode == "center" else None)
    finally:
        model.train(was_training)
    report.update(mode=mode, crop=list(crop) if crop else None,
                  stride=list(stride) if mode == "slide" else None,
                  device=str(dev), amp=amp if dev.type == "cuda" else False)
    return report
