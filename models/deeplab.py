"""DeepLabV3+ (Chen et al., ECCV 2018) over any timm `features_only` backbone (METHOD.md "Models").

Written for ONNX export with dynamic H/W: no Python branch on tensor values, padding computed from
shapes only, image pooling as a mean over H, W (no AdaptiveAvgPool).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_features, load_backbone_weights, resolve
from .pretrained import PACKAGE_SOURCE, package_weights_path

STRIDE_FALLBACKS = ("upsample", "truncate")
HEADS = ("dense", "separable")


def conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def sep_conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    """Atrous separable convolution of the DeepLabV3+ paper (its Xception head): depthwise k x k
    (dilated) + BN + ReLU, then pointwise 1x1 + BN + ReLU; about k*k times fewer FLOPs than dense."""
    pad = dilation * (k - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cin, k, padding=pad, dilation=dilation, groups=cin, bias=False),
                         nn.BatchNorm2d(cin), nn.ReLU(inplace=True), conv_bn_relu(cin, cout, 1))


def conv3x3(head: str):
    """The 3x3 block of a head: dense (today's, the paper presets) or atrous separable."""
    if head not in HEADS:
        raise ValueError(f"model head must be one of {', '.join(HEADS)}, got '{head}'")
    return conv_bn_relu if head == "dense" else sep_conv_bn_relu


class GlobalAttention(nn.Module):
    """Transformer encoder layers over the deepest CNN map (the TransUNet pattern): every position
    attends to every other, so a pretrained CNN stem gets image-wide context. A depthwise 3x3
    convolution adds position (a conditional position encoding, Chu et al. 2021), which works at
    any input size, unlike a learned table."""

    def __init__(self, ch: int, layers: int, heads: int = 8):
        super().__init__()
        self.pos = nn.Conv2d(ch, ch, 3, padding=1, groups=ch)
        layer = nn.TransformerEncoderLayer(ch, heads, 4 * ch, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(x)
        b, c, h, w = x.shape
        tokens = self.encoder(x.flatten(2).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class ResidualContext(nn.Module):
    """GlobalAttention added to the backbone's deepest map instead of replacing it: projected in to
    the attention width, projected back out by a zero-initialised 1x1 convolution, and summed with
    the map. At initialisation the network is exactly its attention-free twin with its pretrained
    deep features intact; the attention layers then learn a correction (zero-init residual branches,
    as in ReZero / Fixup). Measured on CamVid it does not close the attention teacher's gap to its
    plain twin; the attention layers' learning rate does (`train.attention_lr_mult`; docs/experiments.md,
    section 12)."""

    def __init__(self, ch: int, width: int, layers: int):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(ch, width, 1), GlobalAttention(width, layers))
        self.out = nn.Conv2d(width, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(self.inner(x))


class ASPP(nn.Module):
    """1x1 + three atrous 3x3 (rates) + image pooling, concatenated and projected to `ch`."""

    def __init__(self, cin: int, ch: int = 256, rates: tuple[int, ...] = (6, 12, 18), dropout: float = 0.1,
                 head: str = "dense"):
        super().__init__()
        conv = conv3x3(head)
        self.branches = nn.ModuleList([conv_bn_relu(cin, ch, 1)] + [conv(cin, ch, 3, r) for r in rates])
        # No BatchNorm on the pooled 1x1 map: one value per channel per image would make BN fail
        # (or be meaningless) at one image per GPU; a biased conv does the same job there.
        self.pool = nn.Sequential(nn.Conv2d(cin, ch, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(conv_bn_relu(ch * (len(rates) + 2), ch, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True))  # == AdaptiveAvgPool2d(1), exports as ReduceMean
        outs.append(pooled.expand_as(outs[0]))
        return self.project(torch.cat(outs, dim=1))


class Decoder(nn.Module):
    """Upsample the ASPP map to stride 4, concatenate the 48-channel skip, two 3x3 convs."""

    def __init__(self, low_ch: int, ch: int = 256, skip_ch: int = 48, head: str = "dense"):
        super().__init__()
        conv = conv3x3(head)
        self.skip = conv_bn_relu(low_ch, skip_ch, 1)
        self.fuse = nn.Sequential(conv(ch + skip_ch, ch, 3), conv(ch, ch, 3))

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([high, self.skip(low)], dim=1))


class DeepLabV3Plus(nn.Module):
    """Returns `{"logits": NxCxHxW at input size, "features": N x channels x ⌈H/4⌉x⌈W/4⌉}` for any H, W.

    Output stride: ResNet-family backbones are dilated by timm (`output_stride=`). Backbones timm
    cannot dilate (Swin: fixed strides 4/8/16/32) follow `stride_fallback`:
    - "upsample" (default): the deepest stage, bilinearly upsampled to 1/output_stride, feeds the
      ASPP, so every pretrained stage is used (ASPP rates count stride-`output_stride` pixels);
    - "truncate": the stage whose stride equals output_stride feeds the ASPP and deeper stages are
      dropped (fewer parameters and FLOPs).
    The input is zero-padded (bottom/right) to a multiple of `self.stride`, the backbone's deepest
    stride, and outputs are cropped back, so features of different backbones align pixel for pixel.

    `head`: "dense" 3x3 convolutions in ASPP and decoder (as METHOD.md) or "separable" (the DeepLabV3+
    paper's atrous separable convolutions, ~3x cheaper for an edge student). `channels`: ASPP and
    decoder width (the feature losses need the same width for every role). `attention`: number of
    global self-attention layers on the deepest map (0 = none), for a CNN "global" teacher;
    `attention_residual`: they add to that map (`ResidualContext`) instead of replacing it.
    """

    def __init__(self, backbone: str, num_classes: int, output_stride: int = 16, pretrained: bool = False,
                 stride_fallback: str = "upsample", dropout: float = 0.1, head: str = "dense",
                 channels: int = 256, attention: int = 0, attention_residual: bool = False):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        if stride_fallback not in STRIDE_FALLBACKS:
            raise ValueError(f"stride_fallback must be one of {STRIDE_FALLBACKS}, got '{stride_fallback}'")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        spec = resolve(backbone)
        self.backbone_name, self.output_stride, self.num_classes = backbone, output_stride, num_classes
        self.stride_fallback = stride_fallback
        self.head, self.channels, self.attention = head, int(channels), int(attention)
        self.attention_residual = bool(attention_residual) and self.attention > 0

        self.backbone = create_features(spec, output_stride, pretrained)
        reductions = self.backbone.feature_info.reduction()
        if 4 not in reductions:
            raise ValueError(f"backbone '{backbone}' has no stride-4 stage (strides {reductions}); "
                             f"DeepLabV3+ needs one for its skip connection")
        if reductions[-1] > output_stride and stride_fallback == "truncate":
            if output_stride not in reductions:
                raise ValueError(f"backbone '{backbone}' has no stride-{output_stride} stage to truncate at")
            keep = reductions.index(output_stride)
            self.backbone = create_features(spec, output_stride, pretrained, out_indices=tuple(range(keep + 1)))
            reductions = self.backbone.feature_info.reduction()
        channels = self.backbone.feature_info.channels()
        self.low_index = reductions.index(4)
        self.stride = reductions[-1]                      # pad inputs to a multiple of this
        self.upsample_high = reductions[-1] > output_stride
        self.channels_last_features = str(getattr(self.backbone, "output_fmt", "NCHW")).endswith("NHWC")

        scale = 16 // output_stride                       # rates 6/12/18 at OS16, doubled at OS8
        deep_ch = channels[-1]
        if self.attention:
            # A width divisible by 8 heads; the projection in is the only change to the backbone's map.
            width = max(64, -(-deep_ch // 64) * 64)
            if self.attention_residual:
                self.context = ResidualContext(deep_ch, width, self.attention)
            else:
                self.context = nn.Sequential(nn.Conv2d(deep_ch, width, 1), GlobalAttention(width, self.attention))
                deep_ch = width
        self.aspp = ASPP(deep_ch, self.channels, tuple(r * scale for r in (6, 12, 18)), dropout, head)
        self.decoder = Decoder(channels[self.low_index], self.channels, 48, head)
        self.classifier = nn.Conv2d(self.channels, num_classes, 1)
        for m in [*self.aspp.modules(), *self.decoder.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def arch(self) -> dict:
        """Everything `build_segmenter(**arch)` needs to rebuild this network (checkpoint `arch`)."""
        return {"backbone": self.backbone_name, "output_stride": self.output_stride,
                "num_classes": self.num_classes, "stride_fallback": self.stride_fallback,
                "head": self.head, "channels": self.channels, "attention": self.attention,
                "attention_residual": self.attention_residual}

    def forward(self, x: torch.Tensor, fp_dropout: float = 0.0) -> dict[str, torch.Tensor]:
        """`fp_dropout` > 0 (UniMatch's feature perturbation, training only) adds `logits_fp`: the
        prediction decoded from the same backbone maps after channel dropout (Dropout2d) at that rate,
        decoded in one batch with the clean maps as UniMatch does."""
        h, w = x.shape[-2:]
        m = self.stride
        x = F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m))  # shape arithmetic only: ONNX-safe
        hp, wp = x.shape[-2:]
        feats = self.backbone(x)
        low, high = feats[self.low_index], feats[-1]
        if self.channels_last_features:  # timm Swin returns NHWC maps
            low, high = low.permute(0, 3, 1, 2), high.permute(0, 3, 1, 2)
        if fp_dropout > 0:
            n = low.shape[0]
            low = torch.cat([low, F.dropout2d(low, fp_dropout, training=True)])
            high = torch.cat([high, F.dropout2d(high, fp_dropout, training=True)])
        logits, features = self._decode(low, high, hp, wp)
        perturbed = None
        if fp_dropout > 0:
            (logits, perturbed), features = logits.split(n), features[:n]
        out = {"logits": logits[:, :, :h, :w], "features": features[:, :, : (h + 3) // 4, : (w + 3) // 4]}
        if perturbed is not None:
            out["logits_fp"] = perturbed[:, :, :h, :w]
        return out

    def _decode(self, low: torch.Tensor, high: torch.Tensor, hp: int, wp: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits at the padded input size, decoder features) from the stride-4 and deepest maps."""
        if self.upsample_high:
            high = F.interpolate(high, size=(hp // self.output_stride, wp // self.output_stride),
                                 mode="bilinear", align_corners=False)
        if self.attention:
            high = self.context(high)
        features = self.decoder(low, self.aspp(high))
        logits = F.interpolate(self.classifier(features), size=(hp, wp), mode="bilinear", align_corners=False)
        return logits, features


def build_segmenter(backbone: str, num_classes: int, output_stride: int = 16, pretrained: bool = False,
                    weights: str | Path | None = None, stride_fallback: str = "upsample", head: str = "dense",
                    channels: int = 256, attention: int = 0, attention_residual: bool = False) -> DeepLabV3Plus:
    """DeepLabV3+ over a timm backbone (or alias such as `swin_nano`).

    `weights=PATH` (a backbone state dict in timm naming or the efficientnet-lite-pytorch layout,
    .pth/.pt/.safetensors) takes precedence over `pretrained=True` and never touches the network;
    `weights="package"` takes the backbone's installed weights package (models/pretrained.py).
    """
    if weights == PACKAGE_SOURCE:
        weights = package_weights_path(resolve(backbone).arch)
    model = DeepLabV3Plus(backbone, num_classes, output_stride, pretrained=bool(pretrained) and not weights,
                          stride_fallback=stride_fallback, head=head, channels=channels, attention=attention,
                          attention_residual=attention_residual)
    if weights:
        model.weights_report = load_backbone_weights(model.backbone, weights)
    return model


def param_groups(model: nn.Module, lr: float | None = None, head_lr_mult: float = 1.0,
                 weight_decay: float | None = None, attention_lr_mult: float | None = None) -> list[dict]:
    """Optimizer groups `backbone` (lr_mult 1), `head` (ASPP, decoder, classifier, attention layers;
    lr_mult `head_lr_mult`) and, given `attention_lr_mult` for a network with attention layers,
    `attention` (those layers at that lr_mult). With `lr`, each group also gets `lr = lr * lr_mult`;
    schedulers should scale from `lr_mult` too. Frozen parameters are left out. Accepts DDP /
    torch.compile wrappers."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    mults = {"backbone": 1.0, "head": float(head_lr_mult)}
    context = getattr(model, "context", None)  # absent without attention layers
    context_ids = set()
    if context is not None and attention_lr_mult is not None:
        context_ids = {id(p) for p in context.parameters()}
        mults["attention"] = float(attention_lr_mult)
    groups = {name: [] for name in mults}
    for p in model.parameters():
        if p.requires_grad:
            groups["backbone" if id(p) in backbone_ids else "attention" if id(p) in context_ids else "head"].append(p)
    out = []
    for name, params in groups.items():
        mult = mults[name]
        g = {"name": name, "params": params, "lr_mult": mult}
        if lr is not None:
            g["lr"] = lr * mult
        if weight_decay is not None:
            g["weight_decay"] = weight_decay
        out.append(g)
    return out
