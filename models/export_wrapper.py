"""What an exported graph computes: the segmenter plus optional in-graph preprocessing/argmax."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from igldt.constants import IMAGENET_MEAN, IMAGENET_STD


class SegmentationExportWrapper(nn.Module):
    """Single-tensor in, single-tensor out, for `torch.onnx.export`.

    Input: float32 Nx3xHxW normalised RGB, or with `bake_preprocess=True` uint8 NxHxWx3 BGR frames
    as OpenCV / video decoders hand them over (cast, BGR->RGB, /255, mean/std, NCHW in the graph).
    Output: `logits` float NxCxHxW, or `labels` uint8 NxHxW (argmax; classes must be < 256).
    """

    def __init__(self, model: nn.Module, output: str = "logits", bake_preprocess: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if output not in ("logits", "labels"):
            raise ValueError(f"output must be 'logits' or 'labels', got '{output}'")
        if output == "labels" and getattr(model, "num_classes", 0) > 256:
            raise ValueError("labels output is uint8: at most 256 classes")
        self.model, self.output, self.bake_preprocess = model, output, bake_preprocess
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x/255 - mean)/std folded into one multiply-add.
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)
        self.eval()  # exported graphs are inference graphs (BN running stats, no dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bake_preprocess:
            x = x.permute(0, 3, 1, 2).flip(1).float() * self.scale + self.shift  # NHWC BGR -> NCHW RGB
        logits = self.model(x)["logits"]
        if self.output == "labels":
            return logits.argmax(dim=1).to(torch.uint8)
        return logits
