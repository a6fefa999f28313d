"""INT8 post-training static quantisation of the ONNX graph with ONNX Runtime, for one of two engines.

Both are QDQ graphs (QuantizeLinear/DequantizeLinear pairs) with per-channel symmetric int8 weights,
calibrated on real images; they differ where the engines differ (docs/results.md, "INT8"):

- `ort` (ONNX Runtime on CPU, `--format onnx`): every operator ORT has an integer kernel for gets
  Q/DQ on its inputs and output (Conv, Add, Concat, Resize, pooling, ...), so ORT fuses each
  DQ -> Conv -> Q into one QLinearConv and the tensors between them stay int8; activations are
  uint8 with a zero point (U8S8, the form ORT's x86 kernels (VNNI) are fastest with, and ReLU6
  outputs in [0, 6] use all 256 levels instead of half of them). Measured on the Lite0 student:
  2.4x faster than fp32 and within 1 mIoU; Q/DQ on the Conv inputs alone ran every Conv in float
  (nothing to fuse without a Q after it) for 3 mIoU less.
- `tensorrt` (`--format trt`): symmetric int8 activations (zero point 0), the only form TensorRT's
  explicit quantisation takes, on the inputs of the weighted ops and of Add (NVIDIA's guidance:
  a quantised residual input lets the Add fuse into the convolution before it), and the layers left
  unquantised in fp16 (opset 19, fp16 scales: `onnx.to_fp16`).
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from igldt.runtime.preprocess import bgr_batch, normalize_batch, padded_size, resize_image

from .onnx import ExportError, to_fp16

METHODS = ("minmax", "percentile", "entropy")
# target -> (operators given Q/DQ (None: all ORT can quantise), activation type name, symmetric activations,
#            type of the layers left unquantised: TensorRT builds strongly typed, so they run at their ONNX
#            type and fp16 keeps them off fp32; ORT's CPU kernels want them float32)
TARGETS = {
    "ort": (None, "QUInt8", False, "fp32"),
    "tensorrt": (["Conv", "ConvTranspose", "Gemm", "MatMul", "Add"], "QInt8", True, "fp16"),
}


def _reader(images: Sequence[Callable[[], np.ndarray]], input_name: str, mean, std, stride: int, baked: bool,
            fixed_hw: tuple[int, int] | None = None):
    from onnxruntime.quantization import CalibrationDataReader

    class ImageCalibrationReader(CalibrationDataReader):
        """Feeds real images one at a time, preprocessed exactly as the runtime does."""

        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(images):
                return None
            img = images[self.i]()
            self.i += 1
            if fixed_hw:  # a static graph takes one size: the runtime resizes every frame to it, so do we
                img = resize_image(img, fixed_hw)
            size = padded_size(img.shape[0], img.shape[1], stride)
            x = bgr_batch([img], mean, size) if baked else normalize_batch([img], mean, std, size)
            return {input_name: x}

        def rewind(self):
            self.i = 0

    return ImageCalibrationReader()


def _links(graph) -> tuple[dict, dict[str, list]]:
    """{tensor: the node that writes it}, {tensor: the nodes that read it}."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def float_tail(proto):
    """Drop each QuantizeLinear -> DequantizeLinear pair whose float output goes only to ArgMax or to a
    graph output: nothing integer follows it, so the pair only rounds the logits and costs a pass over
    the largest tensor of the graph (11 x 224 x 320 at the edge size). The ArgMax then takes the exact
    float logits. Measured on the 224x320 INT8 labels graph: 8.52 ms p50 against 8.76 (2 cores, 5
    interleaved rounds; docs/results.md, "INT8 with a tolerance"). Returns (proto, pairs dropped)."""
    g = proto.graph
    producer, consumers = _links(g)
    outputs = {o.name for o in g.output}
    dropped = []
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        users = consumers.get(dq.output[0], [])
        at_output = dq.output[0] in outputs
        if q is None or q.op_type != "QuantizeLinear" or len(consumers.get(q.output[0], [])) != 1:
            continue
        if not users and not at_output or any(u.op_type != "ArgMax" for u in users):
            continue
        if at_output:  # the graph output keeps its name: the float tensor takes it
            src = producer.get(q.input[0])
            if src is None or len(consumers[q.input[0]]) != 1 or q.input[0] in outputs:
                continue
            src.output[list(src.output).index(q.input[0])] = dq.output[0]
        else:
            for u in users:
                u.input[list(u.input).index(dq.output[0])] = q.input[0]
        dropped += [q, dq]
    for n in dropped:
        g.node.remove(n)
    return proto, len(dropped) // 2


def shared_concat_scales(proto):
    """Give each quantised Concat's inputs the scale and zero point of its output: ORT's QLinearConcat
    then copies bytes instead of re-quantising every input through a lookup table (what TensorRT also
    asks of a Concat's inputs). The output's minmax range covers every input's (a Concat's output is its
    inputs), so nothing clips; an input with a narrower range gets coarser steps (on the Lite0 student the
    ASPP's branches go from 0.019-0.027 to 0.034, the decoder's upsampled input from 0.0174 to 0.0195).
    Only where an input's Q -> DQ pair serves that Concat alone (changing its scale touches nothing
    else). Returns (proto, inputs re-scaled)."""
    g = proto.graph
    producer, consumers = _links(g)
    changed = 0
    for cat in [n for n in g.node if n.op_type == "Concat"]:
        outs = consumers.get(cat.output[0], [])
        if len(outs) != 1 or outs[0].op_type != "QuantizeLinear":
            continue
        scale_zp = list(outs[0].input[1:3])
        pairs = []
        for name in cat.input:
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or len(consumers[name]) != 1 \
                    or len(consumers[q.output[0]]) != 1 or len(q.input) != len(outs[0].input):
                break
            pairs.append((q, dq))
        else:
            for q, dq in pairs:
                if list(q.input[1:3]) != scale_zp:
                    q.input[1:3] = dq.input[1:3] = scale_zp
                    changed += 1
    return proto, changed


def _preprocessing_nodes(path: Path) -> list[str]:
    """The nodes of a baked graph between its uint8 input and the first convolution (layout, BGR->RGB,
    x * scale + shift). They stay float: quantised, their Mul and Add ran as QLinearMul/QLinearAdd at
    4.5 ms a 224x320 frame (a third of the INT8 network), against 0.13 ms in float; the first Conv
    still gets its Q/DQ input like every other."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    _, consumers = _links(graph)
    found, frontier = [], [i.name for i in graph.input]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type not in ("Conv", "ConvTranspose") and node.name not in found:
                found.append(node.name)
                frontier.extend(node.output)
    return found


# Operators the accuracy-aware loop may leave in float, one node at a time (the layers that compute;
# reshapes and the like only carry their input's Q/DQ along).
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "Resize", "GlobalAveragePool",
             "AveragePool", "MaxPool")


class Int8Quantizer:
    """An fp32 graph prepared once (ONNX shape inference + ORT optimisation) and calibrated once (ORT's
    calibration cache), then quantised as often as asked, each time with other nodes left in float:
    what the accuracy-aware loop (export/accuracy.py) needs. Use it as a context manager (its scratch
    folder goes on exit); `quantize_int8` is the one-shot form."""

    def __init__(self, fp32_path: str | Path, images: Sequence[Callable[[], np.ndarray]], meta: dict,
                 method: str = "minmax", target: str = "ort"):
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if not images:
            raise ExportError("INT8 needs calibration images and none were found; pass --calib DIR with a few dozen "
                              "real images from the deployment domain")
        if method not in METHODS:
            raise ExportError(f"--calib-method {method}: choose one of {', '.join(METHODS)}")
        if target not in TARGETS:
            raise ExportError(f"--int8-target {target}: choose one of {', '.join(TARGETS)}")
        self.method, self.target, self.images = method, target, images
        baked = meta["input"]["layout"] == "NHWC"
        fixed_hw = None if meta["input"].get("dynamic", True) else tuple(meta["input"]["imgsz"])
        self.reader = _reader(images, meta["input"]["name"], meta["mean"], meta["std"], meta["stride"], baked, fixed_hw)
        # Absolute before the chdir below: a relative path would then be read from the scratch folder.
        src = Path(fp32_path).resolve()
        self._tmp = tempfile.TemporaryDirectory(prefix="igldt-int8-", dir=src.parent)
        self.work = Path(self._tmp.name).resolve()
        self.prepared, self.cache = self.work / "pre.onnx", self.work / "calibration.json"
        # ONNX shape inference + ORT graph optimisation (Conv+BN folding) so ranges are taken on the
        # graph that will run. Symbolic shape inference is skipped: it cannot follow the dynamo
        # graph's computed Resize sizes ("Incomplete symbolic shape inference"). chdir: both steps
        # drop scratch files into the working directory.
        with contextlib.chdir(self.work):
            try:
                quant_pre_process(str(src), str(self.prepared), skip_symbolic_shape=True)
                self.note = "quant_pre_process (ONNX shape inference + ORT optimisation)"
            except Exception as e:  # optional step: quantising the plain graph is still correct
                self.prepared, self.note = src, f"quant_pre_process skipped ({e.__class__.__name__})"
        self.preprocessing = _preprocessing_nodes(self.prepared) if baked else []

    def __enter__(self) -> "Int8Quantizer":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def candidates(self) -> list[str]:
        """The nodes this target quantises that compute (LAYER_OPS), in graph order: what may be left in float."""
        import onnx

        ops = TARGETS[self.target][0] or LAYER_OPS
        graph = onnx.load(str(self.prepared), load_external_data=False).graph
        return [n.name for n in graph.node if n.op_type in ops and n.op_type in LAYER_OPS
                and n.name not in self.preprocessing]

    def describe(self) -> dict[str, str]:
        """node name -> what a person recognises: the module of its weight (`backbone.blocks.0.0.conv_dw`,
        from the exporter's initializer name), else `<op> <node name>`."""
        import onnx

        graph = onnx.load(str(self.prepared), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        names = {}
        for n in graph.node:
            w = n.input[1] if len(n.input) > 1 and n.input[1] in weights and n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") else None
            names[n.name] = w.removeprefix("model.").removesuffix(".weight") if w else f"{n.op_type} {n.name}"
        return names

    def quantize(self, exclude: Sequence[str] = ()):
        """The QDQ ModelProto with the nodes named in `exclude` left in float (fp32 for ORT, fp16 for
        TensorRT). The first call calibrates; later ones reuse its ranges."""
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        op_types, activation, symmetric, float_layers = TARGETS[self.target]
        cal = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}[self.method]
        dst = self.work / "int8.onnx"
        self.reader.rewind()
        with contextlib.chdir(self.work):
            quantize_static(
                str(self.prepared), str(dst), self.reader, nodes_to_exclude=[*self.preprocessing, *exclude],
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                activation_type=getattr(QuantType, activation), weight_type=QuantType.QInt8,
                op_types_to_quantize=op_types, calibrate_method=cal,
                calibration_providers=["CPUExecutionProvider"], calibration_cache_path=str(self.cache),
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                               # one Q/DQ pair per tensor shared by its consumers: what both engines fuse
                               "DedicatedQDQPair": False, "CalibTensorRangeSymmetric": symmetric},
            )
        proto = onnx.load(str(dst))
        if float_layers == "fp16":
            return to_fp16(proto)
        return float_tail(shared_concat_scales(proto)[0])[0]

    def report(self, exclude: Sequence[str] = ()) -> dict:
        _, _, symmetric, float_layers = TARGETS[self.target]
        names = self.describe() if exclude else {}  # reads the graph once, not once per layer
        return {"calibration_images": len(self.images), "method": self.method, "target": self.target,
                "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
                "float_layers": float_layers, "prepare": self.note, "left_in_float": list(exclude),
                "left_in_float_layers": [names.get(n, n) for n in exclude]}


def quantize_int8(fp32_path: str | Path, images: Sequence[Callable[[], np.ndarray]], meta: dict,
                  method: str = "minmax", target: str = "ort"):
    """Quantise `fp32_path` (QDQ for `target`: ort | tensorrt), calibrated on `images` (callables returning
    RGB uint8). Returns the quantised ModelProto (the caller embeds metadata and saves it once) and a small
    report (calibration images, target, pre-processing)."""
    with Int8Quantizer(fp32_path, images, meta, method, target) as q:
        return q.quantize(), q.report()
