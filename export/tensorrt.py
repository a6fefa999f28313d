"""ONNX -> serialised TensorRT engine (`student.plan`) with the installed TensorRT's Python API.

Precision lives in the ONNX graph, not in builder flags (TensorRT 11 removed the FP16/INT8 flags
and the calibrators): the network is strongly typed, so an fp16 ONNX gives an fp16 engine and a
Q/DQ ONNX an int8 one. The plan file holds only TensorRT's bytes (nothing prepended); what the
runtime needs sits in the sidecar.
"""
from __future__ import annotations

import os
from pathlib import Path

from igldt.runtime.backends import _ck, _import_cudart

from .onnx import ExportError


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason) for building engines here: tensorrt importable and a CUDA GPU visible."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "TensorRT is not installed (pip install tensorrt on a machine with an NVIDIA GPU)"
    try:
        cudart = _import_cudart()
        count = _ck(cudart.cudaGetDeviceCount())
    except ImportError:
        return False, f"TensorRT {trt.__version__} found but cuda-python is not installed (pip install cuda-python)"
    except Exception as e:
        return False, f"TensorRT {trt.__version__} found but no usable CUDA GPU ({str(e).splitlines()[0][:120]})"
    if not count:
        return False, f"TensorRT {trt.__version__} found but no CUDA GPU is visible"
    return True, f"TensorRT {trt.__version__}"


def gpu_info() -> dict:
    cudart = _import_cudart()
    dev = _ck(cudart.cudaGetDevice())
    prop = _ck(cudart.cudaGetDeviceProperties(dev))
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return {"gpu": name.rstrip("\x00"), "compute_capability": f"{prop.major}.{prop.minor}", "device": int(dev)}


def build_engine(onnx_path: str | Path, plan_path: str | Path, *, input_name: str, layout: str,
                 min_shape: tuple[int, int, int], opt_shape: tuple[int, int, int], max_shape: tuple[int, int, int],
                 workspace_gib: float = 4.0, timing_cache: str | Path | None = None) -> dict:
    """Build and write the engine. Shapes are (batch, H, W); the channel axis is added per layout.
    Returns the TensorRT facts for the sidecar (version, GPU, compute capability, profile)."""
    ok, reason = tensorrt_status()
    if not ok:
        raise ExportError(f"cannot build a TensorRT engine here: {reason}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: tensor types come from the ONNX graph (fp16 ONNX -> fp16, Q/DQ -> int8).
    # TensorRT 11 always builds strongly typed and ignores the (deprecated) flag; 10.x needs it.
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors[:400]}")

    def full(s):
        n, h, w = s
        return (n, 3, h, w) if layout == "NCHW" else (n, h, w, 3)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, full(min_shape), full(opt_shape), full(max_shape))
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    blob = cache_path.read_bytes() if cache_path and cache_path.exists() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, False)  # False: refuse a cache from another TensorRT/GPU

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    with open(plan_path, "wb") as f:
        f.write(serialized)  # IHostMemory supports the buffer protocol
        f.flush()
        os.fsync(f.fileno())
    if cache_path:
        tmp = cache_path.with_name(cache_path.name + ".tmp")
        tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
        os.replace(tmp, cache_path)
    return {"version": trt.__version__, **gpu_info(), "workspace_gib": workspace_gib,
            "timing_cache": str(cache_path) if cache_path else None,
            "profile": {"min": list(full(min_shape)), "opt": list(full(opt_shape)), "max": list(full(max_shape))}}
