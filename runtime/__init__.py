"""Torch-free deployment runtime: numpy, OpenCV and an inference engine only.

    from igldt.runtime import Predictor
    labels = Predictor("student.onnx").predict([rgb_uint8])[0]
"""
from .errors import DeployError
from .metadata import read_sidecar, sidecar_path
from .predictor import Predictor

__all__ = ["DeployError", "Predictor", "read_sidecar", "sidecar_path"]
