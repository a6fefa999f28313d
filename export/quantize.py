"""INT8 post-training static quantisation of the ONNX graph with ONNX Runtime.

QDQ format (QuantizeLinear/DequantizeLinear pairs), per-channel symmetric int8 weights and
symmetric int8 activations (zero point 0): the form TensorRT's explicit quantisation consumes,
and ONNX Runtime on CPU fuses the same pairs into QLinearConv. Only the inputs of weighted ops
(Conv, ConvTranspose, Gemm, MatMul) get Q/DQ, as NVIDIA recommends for TensorRT; the rest of the
graph (the baked preprocessing, Resize, ArgMax) stays float.
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .onnx import ExportError

QUANT_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
METHODS = ("minmax", "percentile", "entropy")


def _reader(images: Sequence[Callable[[], np.ndarray]], input_name: str, mean, std, stride: int, baked: bool):
    from onnxruntime.quantization import CalibrationDataReader

    from igldt.runtime.preprocess import bgr_batch, normalize_batch, padded_size

    class ImageCalibrationReader(CalibrationDataReader):
        """Feeds real images one at a time, preprocessed exactly as the runtime does."""

        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(images):
                return None
            img = images[self.i]()
            self.i += 1
            size = padded_size(img.shape[0], img.shape[1], stride)
            x = bgr_batch([img], mean, size) if baked else normalize_batch([img], mean, std, size)
            return {input_name: x}

        def rewind(self):
            self.i = 0

    return ImageCalibrationReader()


def quantize_int8(fp32_path: str | Path, out_path: str | Path, images: Sequence[Callable[[], np.ndarray]],
                  meta: dict, method: str = "minmax") -> dict:
    """Quantise `fp32_path` into `out_path` (QDQ), calibrated on `images` (callables returning RGB uint8).
    Returns a small report (calibration images, pre-processing used)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not images:
        raise ExportError("INT8 needs calibration images and none were found; pass --calib DIR with a few dozen "
                          "real images from the deployment domain")
    if method not in METHODS:
        raise ExportError(f"--calib-method {method}: choose one of {', '.join(METHODS)}")
    cal = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
           "entropy": CalibrationMethod.Entropy}[method]
    baked = meta["input"]["layout"] == "NHWC"
    reader = _reader(images, meta["input"]["name"], meta["mean"], meta["std"], meta["stride"], baked)
    with tempfile.TemporaryDirectory(prefix="igldt-int8-", dir=Path(out_path).parent) as tmp:
        tmp = str(Path(tmp).resolve())
        src = Path(fp32_path).resolve()
        pre = Path(tmp) / "pre.onnx"
        # ONNX shape inference + ORT graph optimisation (Conv+BN folding) so ranges are taken on the
        # graph that will run. Symbolic shape inference is skipped: it cannot follow the dynamo
        # graph's computed Resize sizes ("Incomplete symbolic shape inference"). chdir: both steps
        # drop scratch files into the working directory.
        with contextlib.chdir(tmp):
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                prepared, note = pre, "quant_pre_process (ONNX shape inference + ORT optimisation)"
            except Exception as e:  # optional step: quantising the plain graph is still correct
                prepared, note = src, f"quant_pre_process skipped ({e.__class__.__name__})"
            quantize_static(
                str(prepared), str(Path(out_path).resolve()), reader,
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=QUANT_OPS, calibrate_method=cal,
                calibration_providers=["CPUExecutionProvider"],
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                               # one Q/DQ pair per tensor shared by its consumers: what TensorRT fuses
                               "DedicatedQDQPair": False, "CalibTensorRangeSymmetric": True},
            )
    return {"calibration_images": len(images), "method": method, "prepare": note}
