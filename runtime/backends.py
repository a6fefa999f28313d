"""Inference engines behind `Predictor`. Each is imported lazily so a box only needs the one it uses:
ONNX Runtime (CPU, or the CUDA EP with onnxruntime-gpu), TensorRT (+ cuda-python), torch (only for .pt)."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .errors import DeployError
from .metadata import parse_embedded


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else e.__class__.__name__)[:300]


def _cuda_index(device: str) -> int:
    if device in ("cuda", "gpu"):
        return 0
    try:
        return int(device.split(":", 1)[1]) if ":" in device else int(device)
    except ValueError:
        raise DeployError(f"--device '{device}' is not understood; use auto, cpu, cuda or cuda:N") from None


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, device: str = "auto", providers=None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DeployError(f"{path}: ONNX Runtime is not installed; pip install onnxruntime "
                              f"(or onnxruntime-gpu on an NVIDIA box)") from None
        available = ort.get_available_providers()
        if providers is None:
            if device == "cpu":
                providers = ["CPUExecutionProvider"]
            elif device == "auto":
                providers = (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
            else:
                if "CUDAExecutionProvider" not in available:
                    raise DeployError(f"--device {device}: this ONNX Runtime has no CUDA provider "
                                      f"(have {', '.join(available)}); pip install onnxruntime-gpu or use --device cpu")
                providers = [("CUDAExecutionProvider", {"device_id": _cuda_index(device)}), "CPUExecutionProvider"]
        so = ort.SessionOptions()
        so.log_severity_level = 3  # our own messages are the clear ones
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/NoSuchFile types
            raise DeployError(f"model file {path} cannot be loaded by ONNX Runtime ({_first_line(e)}); "
                              f"re-export it with: igldt export --weights student.pt --format onnx") from None
        inp = self.session.get_inputs()
        out = self.session.get_outputs()
        if len(inp) != 1:
            raise DeployError(f"model file {path} has {len(inp)} inputs; an igldt segmenter has exactly one image input")
        self.input_name, self.output_name = inp[0].name, out[0].name
        self.input_shape = list(inp[0].shape)
        self.input_type = inp[0].type  # 'tensor(float)' / 'tensor(uint8)'
        self.output_shape = list(out[0].shape)
        self.providers = self.session.get_providers()
        self.embedded_meta = parse_embedded(self.session.get_modelmeta().custom_metadata_map or {})

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]


def _import_cudart():
    try:  # cuda-python >= 12.6 layout, then the older one
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # type: ignore[no-redef]
    return cudart


def _ck(result):
    """cuda-python calls return (err, *values); raise on a CUDA error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise DeployError(f"CUDA error {err}; check the GPU and driver (nvidia-smi)")
    return values[0] if len(values) == 1 else values


class TensorRTBackend:
    """A serialised TensorRT engine run with execute_async_v3 and cuda-python buffers (no pycuda, no torch)."""
    name = "tensorrt"

    def __init__(self, path: Path, device: str = "auto"):
        try:
            import tensorrt as trt
            cudart = _import_cudart()
        except ImportError as e:
            raise DeployError(f"{path}: a TensorRT engine needs the tensorrt and cuda-python packages and an NVIDIA GPU "
                              f"({e.name} missing); pip install tensorrt cuda-python, or run the .onnx instead") from None
        if device == "cpu":
            raise DeployError(f"{path}: a TensorRT engine runs only on a GPU; use the .onnx for --device cpu")
        self.trt, self.cudart = trt, cudart
        if device not in ("auto",):
            _ck(cudart.cudaSetDevice(_cuda_index(device)))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        try:
            self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        except Exception:
            self.engine = None
        if self.engine is None:
            raise DeployError(f"model file {path} is not a TensorRT engine for TensorRT {trt.__version__} on this GPU "
                              f"(engines are tied to the TensorRT version and GPU); rebuild it with igldt export --format trt")
        self.context = self.engine.create_execution_context()
        self._run_lock = threading.Lock()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise DeployError(f"model file {path} has inputs {inputs} and outputs {outputs}; expected one image input")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_shape = [d if d >= 0 else None for d in self.engine.get_tensor_shape(self.input_name)]
        self.output_shape = [d if d >= 0 else None for d in self.engine.get_tensor_shape(self.output_name)]
        self.in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.input_type = "tensor(uint8)" if self.in_dtype == np.uint8 else "tensor(float)"
        mn, _, mx = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.profile = (tuple(mn), tuple(mx))
        self.stream = _ck(cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self.providers = ["TensorRT"]
        self.embedded_meta = None

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _ck(self.cudart.cudaFree(ptr))
            ptr = _ck(self.cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, x: np.ndarray) -> np.ndarray:
        # One execution context, stream and set of buffers: pipeline workers take turns on the GPU (their
        # pre- and post-processing still overlap).
        with self._run_lock:
            return self._run(np.ascontiguousarray(x, dtype=self.in_dtype))

    def _run(self, x: np.ndarray) -> np.ndarray:
        cudart = self.cudart
        mn, mx = self.profile
        if any(s < a or s > b for s, a, b in zip(x.shape, mn, mx)):
            raise DeployError(f"input {tuple(x.shape)} is outside the engine's profile {mn}..{mx}; "
                              f"rebuild with a wider --imgsz range or resize the images")
        if not self.context.set_input_shape(self.input_name, x.shape):
            raise DeployError(f"TensorRT refused input shape {tuple(x.shape)} (profile {mn}..{mx})")
        out = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), self.out_dtype)
        d_in = self._device_buffer(self.input_name, x.nbytes)
        d_out = self._device_buffer(self.output_name, out.nbytes)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _ck(cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes, h2d, self.stream))
        self.context.set_tensor_address(self.input_name, d_in)
        self.context.set_tensor_address(self.output_name, d_out)
        if not self.context.execute_async_v3(self.stream):
            raise DeployError("TensorRT execution failed; run with a smaller batch or rebuild the engine")
        _ck(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes, d2h, self.stream))
        _ck(cudart.cudaStreamSynchronize(self.stream))
        return out

    def __del__(self):
        try:
            for ptr, _ in self._buffers.values():
                self.cudart.cudaFree(ptr)
            self.cudart.cudaStreamDestroy(self.stream)
        except Exception:
            pass


class TorchBackend:
    """A .pt checkpoint through torch, imported here and only here (never for .onnx/.plan)."""
    name = "torch"

    def __init__(self, path: Path, device: str = "auto"):
        try:
            import torch
            from igldt.checkpoint import load_model
        except ImportError as e:
            raise DeployError(f"{path}: a .pt checkpoint needs torch ({e.name} missing); "
                              "install the train extra (pip install \"igldt[train]\") or export it to ONNX on a training "
                              f"machine: igldt export --weights {path.name}") from None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device not in ("cpu",) and not torch.cuda.is_available():
            raise DeployError(f"--device {device}: torch sees no CUDA device; use --device cpu")
        self.torch, self.device = torch, torch.device(device if device != "gpu" else "cuda")
        try:
            model, meta = load_model(path, device=str(self.device))
        except Exception as e:
            raise DeployError(f"model file {path}: {_first_line(e)}") from None
        self.model = model.eval()
        self.input_name, self.output_name = "images", "logits"
        self.input_shape, self.input_type = [None, 3, None, None], "tensor(float)"
        n = meta.get("arch", {}).get("num_classes") or len(meta.get("classes") or [])
        self.output_shape = [None, n or None, None, None]
        self.providers = [f"torch:{self.device}"]
        self.embedded_meta = {
            "format": "igldt-deploy/1", "classes": meta.get("classes"), "palette": _plain(meta.get("palette")),
            "mean": _plain(meta.get("mean")), "std": _plain(meta.get("std")),
            # The network's own padding multiple, as the export records it: a .pt and its .onnx pad alike.
            "stride": int(getattr(model, "stride", None) or meta.get("stride") or 32),
            "output_stride": meta.get("arch", {}).get("output_stride"), "precision": "fp32",
            "input": {"layout": "NCHW", "dtype": "float32", "color": "RGB"}, "output": {"kind": "logits"},
            "dataset": _dataset_of(meta),
        }

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            y = self.model(self.torch.from_numpy(x).to(self.device))
            y = y["logits"] if isinstance(y, dict) else y
            return y.float().cpu().numpy()


def _plain(v):
    return np.asarray(v).tolist() if v is not None else None


def _dataset_of(meta: dict) -> dict | None:
    data = (meta.get("config") or {}).get("data") or {}
    if not data.get("dataset"):
        return None
    return {"name": data.get("dataset"), "root": data.get("root"), "val_split": data.get("val_split", "val")}
