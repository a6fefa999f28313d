"""The network as the exporter should see it: TF "same" padding resolved to constants for inputs whose H
and W are multiples of the network's stride, no in-place activations, and BatchNorm folded into the
convolution before it. All three keep the outputs (exactly, or to float rounding for the folding); together
they take the dynamic ONNX export of an EfficientNet-Lite0 student from minutes to seconds (figures in
docs/results.md), because `torch.export` traces every op with symbolic H, W and batch, and these three
are where that tracing spent its time.

Same padding.

timm's `Conv2dSame`, `MaxPool2dSame` and `AvgPool2dSame` (the `tf_*` backbones, EfficientNet-Lite among
them) pad by `ceil(x / s)` arithmetic on the live input size. Under dynamic H and W, `torch.export`
reasons symbolically about every such layer (minutes of sympy value-range analysis on a Lite0) and the
graph carries the arithmetic as Shape -> Div -> Ceil -> ... -> Pad chains.

Inside the network the input of every such layer is divisible by its stride whenever the network's
input is a multiple of the network's stride, which is what the exported graph accepts and what the
runtime pads to. There the pad is a constant: for kernel k, stride s and dilation d the total is
`max((k - 1) * d + 1 - s, 0)`, split TF-style (the smaller half on the left/top). `resolve_same_padding`
returns a copy of the network with each such layer replaced by a fixed pad and the plain op holding the
same parameters, after checking on a probe input that every replaced layer does see a divisible size.
"""
from __future__ import annotations

import copy

import torch
from timm.layers import BatchNormAct2d
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
from torch import nn

SAME_LAYERS = (Conv2dSame, MaxPool2dSame, AvgPool2dSame)


def same_pad(kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) TF 'same' padding of one axis whose size is divisible by `stride`
    (timm's `get_same_padding` with `ceil(x / s) * s == x`)."""
    total = max((kernel - 1) * dilation + 1 - stride, 0)
    return total // 2, total - total // 2


def _pads(layer: nn.Module) -> tuple[int, int, int, int]:
    """F.pad order: (left, right, top, bottom)."""
    k, s = nn.modules.utils._pair(layer.kernel_size), nn.modules.utils._pair(layer.stride)
    d = nn.modules.utils._pair(getattr(layer, "dilation", 1))
    top, bottom = same_pad(k[0], s[0], d[0])
    left, right = same_pad(k[1], s[1], d[1])
    return left, right, top, bottom


def _fixed(layer: nn.Module) -> nn.Module:
    """The plain op behind a fixed pad; a symmetric pad goes into the op itself (one ONNX node)."""
    left, right, top, bottom = _pads(layer)
    symmetric = left == right and top == bottom
    inner = (top, left) if symmetric else (0, 0)
    if isinstance(layer, Conv2dSame):
        op = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, inner,
                       layer.dilation, layer.groups, bias=layer.bias is not None)
        op.weight, op.bias = layer.weight, layer.bias  # the same Parameters, not copies
        value = 0.0
    elif isinstance(layer, MaxPool2dSame):
        op = nn.MaxPool2d(layer.kernel_size, layer.stride, inner, layer.dilation, ceil_mode=layer.ceil_mode)
        value = float("-inf")
    else:  # AvgPool2dSame: timm pads with zeros that the average counts
        if not layer.count_include_pad:
            raise ValueError("AvgPool2dSame(count_include_pad=False) has no fixed-pad equivalent")
        op = nn.AvgPool2d(layer.kernel_size, layer.stride, inner, layer.ceil_mode, count_include_pad=True)
        value = 0.0
    if symmetric or not any((left, right, top, bottom)):
        return op
    return nn.Sequential(nn.ConstantPad2d((left, right, top, bottom), value), op)


def _run_hooked(model: nn.Module, probe: torch.Tensor, handles: list) -> None:
    """One forward of `model` on `probe` without gradient, its hooks (`handles`) removed afterwards."""
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()


def check_divisible(model: nn.Module, probe: torch.Tensor) -> None:
    """Raise ValueError naming the first 'same' layer whose input is not divisible by its stride when
    `model` runs on `probe`. With the smallest input the contract admits (H = W = the network's stride),
    every layer's input for an input of `stride * k` is k times its size on the probe (exact divisions
    scale with k), so that one probe covers the whole domain."""
    bad: list[str] = []

    def hook(name):
        def check(layer, args):
            s = nn.modules.utils._pair(layer.stride)
            if args[0].shape[-2] % s[0] or args[0].shape[-1] % s[1]:
                bad.append(f"layer '{name}' sees {tuple(args[0].shape[-2:])} at stride {s}")
        return check

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, SAME_LAYERS)]
    _run_hooked(model, probe, handles)
    if bad:
        raise ValueError(f"'same' padding cannot be fixed for inputs of this size: {bad[0]}")


def resolve_same_padding(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of `model` (eval mode) in which every timm 'same' layer pads by a constant, exact for inputs
    whose H and W are multiples of `probe`'s (checked on `probe`, the smallest input of the domain: see
    `check_divisible`); returns it and the number of layers replaced."""
    layers = [n for n, m in model.named_modules() if isinstance(m, SAME_LAYERS)]
    if not layers:
        return model, 0
    check_divisible(model.eval(), probe)
    fixed = copy.deepcopy(model)
    for name in layers:
        parent_name, _, child = name.rpartition(".")
        parent = fixed.get_submodule(parent_name) if parent_name else fixed
        setattr(parent, child, _fixed(getattr(parent, child)))
    return fixed.eval(), len(layers)


def without_inplace(model: nn.Module) -> int:
    """Turn off `inplace` on every module that has it (timm builds its activations in place); returns how
    many. An in-place op under dynamic shapes is functionalised op by op with symbolic stride arithmetic:
    60 in-place ReLU6 cost the ONNX exporter's decomposition 10.8 s, their out-of-place form 0.5 s."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "inplace", None), bool) and m.inplace]
    for m in layers:
        m.inplace = False
    return len(layers)


def _conv_bn_pairs(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name) for every BatchNorm2d whose input, on `probe`, is the very tensor a
    Conv2d returned: the pairs the dataflow proves, whatever the modules' names or order."""
    made: dict[int, tuple[str, torch.Tensor]] = {}  # id -> (conv, tensor): the tensor kept alive, so ids stay unique
    pairs: list[tuple[str, str]] = []

    def conv_hook(name):
        def hook(_, __, out):
            made[id(out)] = (name, out)
        return hook

    def bn_hook(name):
        def hook(_, args):
            if id(args[0]) in made:
                pairs.append((made[id(args[0])][0], name))
        return hook

    handles = [m.register_forward_hook(conv_hook(n)) for n, m in model.named_modules() if type(m) is nn.Conv2d]
    handles += [m.register_forward_pre_hook(bn_hook(n)) for n, m in model.named_modules()
                if type(m) in (nn.BatchNorm2d, BatchNormAct2d) and m.track_running_stats]
    _run_hooked(model, probe, handles)
    convs = [c for c, _ in pairs]
    return [(c, b) for c, b in pairs if convs.count(c) == 1]  # a conv that feeds two norms stays as it is


def fold_batchnorm(model: nn.Module, probe: torch.Tensor) -> int:
    """Fold each eval-mode BatchNorm into the convolution that feeds it (`_conv_bn_pairs`), in place, as
    Ultralytics' `fuse()` does before export; timm's BatchNormAct2d keeps its dropout and activation.
    Returns how many. The exported graph would fold them anyway (ONNX optimiser); folded here, the
    exporter does not trace 50-60 BatchNorms with symbolic shapes (~2 s of a Lite0's export)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = _conv_bn_pairs(model.eval(), probe)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        rest = nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity()
        for name, module in ((conv_name, fuse_conv_bn_eval(conv, bn)), (bn_name, rest)):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
    return len(pairs)


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        y = model(x)
    return list(y.values()) if isinstance(y, dict) else [y]


def exportable(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module, dict]:
    """A copy of `model` for the exporter (`model` untouched): 'same' padding fixed for inputs whose H and
    W are multiples of `probe`'s (`resolve_same_padding`), no in-place activations (`without_inplace`),
    BatchNorm folded (`fold_batchnorm`). The copy is checked against `model` on random values of the probe's
    shape and type; a copy that strays keeps its BatchNorms. Returns it and what changed."""
    fixed, padded = resolve_same_padding(model, probe)
    if fixed is model:
        fixed = copy.deepcopy(model)
    report = {"same_padding_fixed": padded, "inplace_off": without_inplace(fixed)}
    unfolded = copy.deepcopy(fixed)
    report["batchnorm_folded"] = fold_batchnorm(fixed, probe)
    if report["batchnorm_folded"]:
        g = torch.Generator().manual_seed(0)
        check = (torch.randn(probe.shape, generator=g) if probe.is_floating_point()
                 else torch.randint(0, 256, probe.shape, generator=g).to(probe.dtype))
        for a, b in zip(_outputs(model.eval(), check), _outputs(fixed, check)):
            if a.is_floating_point():
                same = torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()) + 1e-6)
            else:  # labels: a near-tie may flip a pixel
                same = bool((a == b).float().mean() > 0.99)
            if not same:
                return unfolded, dict(report, batchnorm_folded=0)
    return fixed, report
