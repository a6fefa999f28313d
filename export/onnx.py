"""PyTorch -> ONNX for the student: export, simplify, check, fp16, and a check against PyTorch.

Exporter: `torch.onnx.export(..., dynamo=True)`, pinned explicitly. It is the default and the
maintained path of the installed torch (the TorchScript exporter, `dynamo=False`, is deprecated since
torch 2.9), and `torch.export` dynamic shapes let us state the real constraint on the input: H and W
are `stride * k`, the batch any size. With that constraint the model's own pad-to-stride folds away.

What makes it fast: the exporter never sees timm's TF "same" padding arithmetic nor its in-place
activations (`igldt.models.exportable`, exact on the stride-multiple domain). Under dynamic H/W
`torch.export` reasons symbolically about every `ceil(x / s)` pad and functionalises every in-place
ReLU6 with symbolic strides: a Lite0 student took 245 s that way, against seconds now, and its graph
carries no padding arithmetic (benchmarks/export.py measures both).

torch, onnx, onnxslim and onnxruntime are imported in the functions that use them: `igldt export`
imports this module before it checks its arguments, and refuses bad ones before seconds of imports.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from igldt.runtime import Predictor
from igldt.runtime.preprocess import normalize_batch, padded_size

OPSET = 18  # >= 17 (LayerNormalization); 18 is the dynamo exporter's native opset
INPUT_NAME = "images"
MAX_SIDE = 8192  # upper bound of the dynamic H/W range recorded for the ONNX graph


class ExportError(RuntimeError):
    """An export that cannot proceed; the message is one line naming the argument and the fix."""


def check_imgsz(imgsz: tuple[int, int], stride: int) -> tuple[int, int]:
    h, w = (int(v) for v in imgsz)
    if h <= 0 or w <= 0 or h % stride or w % stride:
        up = (-(-h // stride) * stride, -(-w // stride) * stride)
        raise ExportError(f"--imgsz {h} {w}: height and width must be positive multiples of {stride} "
                          f"(the model's stride); use --imgsz {up[0]} {up[1]}")
    return h, w


def _rename_dims(model, names: dict[int, str], layout: str) -> None:
    """Give the dynamic axes readable names (batch/height/width) instead of the exporter's `32*s0`."""
    axes = {"NCHW": (0, 2, 3), "NHWC": (0, 1, 2), "NHW": (0, 1, 2)}
    for vi, lay in [(model.graph.input[0], layout)] + [(o, None) for o in model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        lay = lay or ("NHW" if len(dims) == 3 else "NCHW")
        for name, ax in zip(("batch", "height", "width"), axes[lay]):
            if ax < len(dims) and dims[ax].HasField("dim_param"):
                dims[ax].dim_param = name


def _dummy_input(n: int, h: int, w: int, bake_preprocess: bool):
    import torch
    if bake_preprocess:
        return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8)
    return torch.randn(n, 3, h, w)


def export_onnx(wrapper, *, imgsz: tuple[int, int], stride: int, dynamic: bool, bake_preprocess: bool,
                opset: int = OPSET, batch: int = 1):
    """Export `wrapper` (a SegmentationExportWrapper in eval mode) and return the simplified, checked ModelProto.
    The exporter sees `models.exportable`'s copy of it: 'same' padding resolved for inputs of
    `stride * k` and no in-place activations; `wrapper` itself is left as it is."""
    import onnx
    import onnxslim
    import torch
    from torch.export import Dim

    from igldt.models import exportable

    h, w = check_imgsz(imgsz, stride)
    # the smallest input of the contract proves every pad constant; the copy shares the parameters
    wrapper, _ = exportable(wrapper.eval(), _dummy_input(1, stride, stride, bake_preprocess))
    # a batch of 2 keeps torch.export from specialising the batch axis to 1
    n = 2 if dynamic else batch
    dummy = _dummy_input(n, h, w, bake_preprocess)
    hw_axes = (1, 2) if bake_preprocess else (2, 3)
    dynamic_shapes = None
    if dynamic:
        kh = Dim("kh", min=1, max=MAX_SIDE // stride)
        kw = Dim("kw", min=1, max=MAX_SIDE // stride)
        dynamic_shapes = ({0: Dim("batch", min=1, max=1024), hw_axes[0]: stride * kh, hw_axes[1]: stride * kw},)
    out_name = getattr(wrapper, "output", "logits")
    with torch.no_grad():
        try:
            program = torch.onnx.export(wrapper, (dummy,), None, dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[out_name],
                                        dynamic_shapes=dynamic_shapes, external_data=False, optimize=True, verbose=False)
        except Exception as e:
            first = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:300]
            raise ExportError(f"torch.onnx.export (dynamo) failed: {first}") from e
    model = program.model_proto
    # onnxslim: constant folding and dead-node removal, well kept and shape-aware
    model = onnxslim.slim(model)
    _rename_dims(model, {}, "NHWC" if bake_preprocess else "NCHW")
    onnx.checker.check_model(model, full_check=True)
    return model


# The first opset whose QuantizeLinear/DequantizeLinear take fp16 scales (and so give fp16 outputs):
# what a Q/DQ graph needs for its float layers to be fp16 in TensorRT's strongly typed builder.
FP16_QDQ_OPSET = 19


def opset_of(model) -> int:
    """The default-domain opset a ModelProto imports."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def shape_nodes(graph) -> list[str]:
    """Names of the nodes that compute shapes, not pixels: those fed only by Shape outputs, constants
    and each other (e.g. the dynamic 'same' padding of tf_efficientnet, ceil(W / s) in float). Shape
    itself is left out: it reads any type."""
    static = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    shaped: set[str] = set()
    found: list[str] = []
    grew = True
    while grew:  # until nothing is added: any node order (one or two passes on a sorted graph)
        grew = False
        for node in graph.node:
            inputs = [i for i in node.input if i and i not in static]
            if node.output[0] in shaped or not (node.op_type == "Shape" or inputs and all(i in shaped for i in inputs)):
                continue
            shaped.update(node.output)
            if node.op_type != "Shape":
                found.append(node.name)
            grew = True
    return found


def to_fp16(model):
    """fp32 ModelProto -> fp16 weights/compute with float32 inputs and outputs (keep_io_types), via
    the converter shipped with ONNX Runtime (onnxconverter-common is not installed here; this is the
    same code, maintained by the ORT team). Ops in its default block list stay fp32, and so does the
    shape arithmetic (`shape_nodes`): fp16 holds integers exactly only up to 2048, so a wider frame's
    padding would come out wrong.

    A Q/DQ graph (INT8 for TensorRT) is first raised to opset 19 so its scales can be fp16: TensorRT
    builds strongly typed, so the layers left unquantised run at their ONNX type, fp16 rather than
    fp32 (what NVIDIA's ModelOpt does for ONNX PTQ with high_precision_dtype fp16)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.transformers.float16 import convert_float_to_float16

    import onnxslim

    if opset_of(model) < FP16_QDQ_OPSET and any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        model = version_converter.convert_version(model, FP16_QDQ_OPSET)
    for i, node in enumerate(model.graph.node):  # the converter blocks nodes by name
        node.name = node.name or f"{node.op_type}_{i}"
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=shape_nodes(model.graph))
    # the converter appends its IO casts at the end of the node list; onnxslim re-sorts topologically
    # (and folds the casts of constant shapes) so the graph passes the checker
    half = onnxslim.slim(half)
    onnx.checker.check_model(half, full_check=True)
    return half


def save_model(model, path: str | Path) -> None:
    import onnx
    onnx.save_model(model, str(path), save_as_external_data=False)


def torch_logits(model, images: list[np.ndarray], mean, std, stride: int) -> list[np.ndarray]:
    """Reference logits from the PyTorch model with the runtime's own preprocessing (one image at a time)."""
    import torch

    out = []
    with torch.no_grad():
        for img in images:
            h, w = img.shape[:2]
            x = normalize_batch([img], mean, std, padded_size(h, w, stride))
            y = model(torch.from_numpy(x))
            y = y["logits"] if isinstance(y, dict) else y
            out.append(y[0, :, :h, :w].float().numpy())
    return out


def compare_with_torch(model, artefact: str | Path, images: list[np.ndarray], names: list[str] | None = None,
                       device: str = "cpu", threads: int | None = None) -> dict:
    """ONNX Runtime (through the deployment Predictor) vs PyTorch on the same real images."""
    pred = Predictor(artefact, device=device, threads=threads)
    ref = torch_logits(model, images, pred.mean, pred.std, pred.stride)
    ref_labels = [r.argmax(0).astype(np.uint8) for r in ref]
    if pred.output_kind == "labels":
        got_labels, max_diff = pred.predict(images, names), None
    else:
        got = pred.predict_logits(images, names)
        got_labels = [g.argmax(0).astype(np.uint8) for g in got]
        max_diff = float(max(np.abs(g - r).max() for g, r in zip(got, ref)))
    same = sum(int((a == b).sum()) for a, b in zip(got_labels, ref_labels))
    total = sum(a.size for a in ref_labels)
    return {"images": len(images), "max_abs_logit_diff": max_diff, "pixel_agreement": same / max(total, 1)}
