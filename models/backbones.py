"""timm `features_only` backbones: name aliases, output stride, pretrained / local weights.

A backbone here is a timm feature extractor plus what the DeepLabV3+ head needs to know about it:
which outputs to take (stride-4 skip and the deepest map), their channels and strides, whether the
maps come channels-last (Swin), and the multiple an input must be padded to.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from .pretrained import (PretrainedWeightsError, convert_efficientnet_lite, has_package,
                         is_efficientnet_lite_layout, package_weights_path)

log = logging.getLogger("igldt.models")

# Small named variants for CPU presets: alias -> (timm architecture, extra create_model kwargs).
ALIASES: dict[str, tuple[str, dict]] = {
    # Swin-T layout at half width with 2 blocks in stage 3: ~7M parameters instead of 28M.
    "swin_nano": ("swin_tiny_patch4_window7_224",
                  {"embed_dim": 48, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24)}),
}

# Swin's window masks are sized from img_size at build time; a stage smaller than the window loses
# its shifted windows for good. 512 keeps every stage of a patch-4 Swin >= 7 tokens, and
# strict_img_size=False rebuilds the masks for the real input size on each forward.
SWIN_IMG_SIZE = 512


@dataclass
class BackboneSpec:
    name: str                       # the name the user gave (alias or timm name)
    arch: str                       # the timm architecture actually built
    kwargs: dict = field(default_factory=dict)

    @property
    def is_swin(self) -> bool:
        return self.arch.startswith("swin")


def resolve(name: str) -> BackboneSpec:
    """Alias or timm name -> spec; unknown names fail with the list of close timm names."""
    if name in ALIASES:
        arch, kwargs = ALIASES[name]
        return BackboneSpec(name, arch, dict(kwargs))
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        hint = f"; similar timm names: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown backbone '{name}': not a timm model nor one of {sorted(ALIASES)}{hint}")
    return BackboneSpec(name, name)


def _pretrained_source(arch: str) -> tuple[str | None, bool]:
    """(host to download from, already in the local cache?) for timm's default weights of `arch`."""
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return None, False
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
            repo, _, rev = cfg.hf_hub_id.partition("@")
            for fname in filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin")):
                if isinstance(try_to_load_from_cache(repo, fname, revision=rev or None), str):
                    return None, True
        except Exception:  # an odd cache layout must not block a download that may work
            pass
        return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname, False
    if cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        return urlparse(cfg.url).hostname, cached.exists()
    return None, False


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


NO_HUB_WEIGHTS = "timm has no pretrained weights for it"


def _hub_unavailable(host: str | None) -> str | None:
    """Why timm's hub download cannot work right now (None when it may): fail in seconds, not
    after the hub client's minute of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set and they are not cached"
    if host is None:
        return NO_HUB_WEIGHTS
    if not _reachable(host):
        return f"{host} unreachable and not cached"
    return None


def _offline_error(name: str, why: str) -> PretrainedWeightsError:
    return PretrainedWeightsError(
        f"backbone '{name}': cannot get pretrained weights ({why}); "
        f"no network: pass weights=PATH to a local file or pretrained=false")


def create_features(spec: BackboneSpec, output_stride: int, pretrained: bool,
                    out_indices: tuple[int, ...] | None = None) -> nn.Module:
    """timm feature extractor (all stages unless `out_indices`); dilated to `output_stride` where
    timm supports it (ResNet family), left at its native strides otherwise (Swin)."""
    kwargs = dict(spec.kwargs)
    if out_indices is not None:
        kwargs["out_indices"] = out_indices
    if spec.is_swin:
        kwargs.update(img_size=SWIN_IMG_SIZE, strict_img_size=False)
    package = None  # offline fallback: the weights package, when the hub cannot be reached
    if pretrained:
        if spec.name in ALIASES:
            raise PretrainedWeightsError(
                f"backbone '{spec.name}' is a narrow variant with no published weights; "
                f"use pretrained=false (or weights=PATH to your own)")
        host, cached = _pretrained_source(spec.arch)
        why = None if cached else _hub_unavailable(host)
        if why and has_package(spec.arch):
            package, pretrained = package_weights_path(spec.arch), False
            log.info("backbone '%s': %s; ImageNet weights from the installed package %s", spec.name, why, package)
        elif why == NO_HUB_WEIGHTS:
            raise PretrainedWeightsError(f"backbone '{spec.name}': {NO_HUB_WEIGHTS}; pass weights=PATH or pretrained=false")
        elif why:
            raise _offline_error(spec.name, why)

    def build(**extra):
        model = timm.create_model(spec.arch, features_only=True, pretrained=pretrained, **kwargs, **extra)
        if package is not None:
            load_backbone_weights(model, package)
        return model

    try:
        if output_stride == 32:
            return build()
        try:
            return build(output_stride=output_stride)
        except TypeError:  # architecture without dilation support (Swin, ViT...): head compensates
            return build()
    except PretrainedWeightsError:
        raise
    except Exception as e:
        if not pretrained:
            raise
        raise _offline_error(spec.name, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}") from e


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .pth / .pt file, unwrapping {'state_dict'|'model': ...} and 'module.'."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; pass weights=PATH to a local .pth/.safetensors")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PretrainedWeightsError(f"weights file {path}: cannot be read safely ({type(e).__name__}); "
                                     f"give a plain state dict (.pth/.pt/.safetensors)") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PretrainedWeightsError(f"weights file {path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict:
    """Load a backbone state dict (timm naming) from a local file; returns key counts, logs them.

    timm's feature wrappers keep the original module names except that nested sequentials are
    flattened (Swin's `layers.0` becomes `layers_0`), so keys are matched after that renaming; the
    classifier keys of a full-model file simply end up in `unexpected`.
    """
    sd = read_state_dict(path)
    own = backbone.state_dict()
    if is_efficientnet_lite_layout(sd):  # efficientnet-lite-pytorch names (the weights packages)
        sd = convert_efficientnet_lite(sd, own, source=f"weights file {path}")

    def rename(k: str) -> str:
        alt = k.replace(".", "_", 1)  # timm feature wrappers flatten `layers.0` to `layers_0`
        return k if k in own or alt not in own else alt

    mapped = {rename(k): v for k, v in sd.items()}
    matched = [k for k in mapped if k in own]
    if not matched:
        raise PretrainedWeightsError(f"weights file {path}: no key matches the backbone "
                                     f"(expected timm names such as '{next(iter(own))}')")
    bad = [k for k in matched if mapped[k].shape != own[k].shape]
    if bad:
        raise PretrainedWeightsError(f"weights file {path}: {len(bad)} tensors have the wrong shape "
                                     f"(first: {bad[0]} {tuple(mapped[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}); "
                                     f"is it the same backbone?")
    result = backbone.load_state_dict({k: mapped[k] for k in matched}, strict=False)
    report = {"loaded": len(matched), "missing": len(result.missing_keys),
              "unexpected": len(sd) - len(matched)}
    log.info("backbone weights %s: %d tensors loaded, %d missing, %d unused", path,
             report["loaded"], report["missing"], report["unexpected"])
    if report["missing"]:
        log.warning("backbone weights %s: %d backbone tensors not in the file (first: %s)",
                    path, report["missing"], result.missing_keys[0])
    return report
