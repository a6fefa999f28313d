"""`Predictor`: one call from RGB frames to label maps, whatever engine sits behind the artefact."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from .errors import DeployError
from .metadata import default_palette, read_sidecar, with_defaults
from .preprocess import bgr_batch, check_image, check_imgsz, normalize_batch, padded_size, resize_image, resize_result

BACKENDS = {".onnx": "onnx", ".plan": "tensorrt", ".engine": "tensorrt", ".pt": "torch", ".pth": "torch"}


def _int_or_none(d):
    return d if isinstance(d, int) and d > 0 else None


def describe_imgsz(imgsz) -> str:
    if imgsz is None:
        return "native"
    return f"{imgsz[0]}x{imgsz[1]}" if isinstance(imgsz, tuple) else f"longest side <= {imgsz}"


class Predictor:
    """Semantic segmentation over ONNX Runtime, TensorRT or (for .pt only) torch.

    `predict(images)` takes a list of HxWx3 uint8 RGB arrays and returns HxW uint8 label maps;
    `predict_logits(images)` returns CxHxW float32 (not available for graphs exported with
    `--output labels`). Images are padded bottom/right to the stride and cropped back, exactly
    as evaluation in training does; same-sized images are batched `batch` at a time.
    `timing` holds the last call's pre/infer/post milliseconds, per thread: a pipeline may call one
    Predictor from several threads at once (ONNX Runtime, TensorRT contexts and torch allow it).

    `imgsz` sets the size the network sees; results always come back at each image's own size:
    None = the image's size (a static engine: its fixed size); an int L = images whose longer side
    exceeds L are scaled down to L (aspect kept), smaller ones run as they are; (H, W) = every image
    resized to H x W; "auto" = the longest side of the size recorded at export (`igldt infer`'s
    default). Labels are scaled back with nearest neighbour, logits bilinearly.
    """

    def __init__(self, model_path, device: str = "auto", providers=None, batch: int = 1, threads: int | None = None,
                 imgsz: int | tuple[int, int] | str | None = None):
        path = Path(model_path)
        if not path.exists():
            raise DeployError(f"model file {path} not found; create one with: igldt export --weights student.pt --format onnx")
        if not path.is_file():
            raise DeployError(f"model {path} is a folder; pass the .onnx, .plan or .pt file inside it")
        kind = BACKENDS.get(path.suffix.lower())
        if kind is None:
            raise DeployError(f"model file {path}: unknown type '{path.suffix}'; use .onnx, .plan/.engine or .pt")
        if path.stat().st_size == 0:
            raise DeployError(f"model file {path} is empty (an interrupted copy?); export or copy it again")
        self.path, self.kind, self.device = path, kind, device
        if kind == "onnx":
            from .backends import OnnxRuntimeBackend
            self.backend = OnnxRuntimeBackend(path, device, providers, threads)
        elif kind == "tensorrt":
            from .backends import TensorRTBackend
            self.backend = TensorRTBackend(path, device)
        else:
            from .backends import TorchBackend
            self.backend = TorchBackend(path, device)
        b = self.backend
        out_shape = list(b.output_shape)
        n_out = _int_or_none(out_shape[1]) if len(out_shape) == 4 else None
        sidecar = read_sidecar(path)
        self.meta = with_defaults(sidecar or b.embedded_meta, str(path), n_out)
        m = self.meta
        self.classes = list(m.get("classes") or [])
        self.num_classes = len(self.classes) or n_out
        pal = m.get("palette") or default_palette(max(self.num_classes or 0, 1))
        self.palette = np.asarray(pal, np.uint8).reshape(-1, 3)
        self.mean, self.std = m["mean"], m["std"]
        self.stride = int(m.get("stride") or 32)
        self.baked = m["input"].get("layout") == "NHWC"
        if self.baked != (b.input_type == "tensor(uint8)"):
            raise DeployError(f"model file {path}: metadata says input {m['input'].get('layout')} but the graph takes "
                              f"{b.input_type}; the sidecar {path.name}.json belongs to another export, delete or fix it")
        self.output_kind = m["output"].get("kind", "logits")
        shape = list(b.input_shape)
        hw = (shape[1], shape[2]) if self.baked else (shape[2], shape[3])
        self.fixed_hw = tuple(hw) if all(_int_or_none(d) for d in hw) else None
        self.max_batch = _int_or_none(shape[0])
        self.batch = max(1, int(batch))
        if self.max_batch:
            self.batch = min(self.batch, self.max_batch)
        if imgsz in (None, "auto") and self.fixed_hw:
            imgsz = self.fixed_hw  # a static engine runs at its one size
        elif imgsz == "auto":  # the export's size as the longest side: a 4K stream runs at the size trained for
            recorded = m["input"].get("imgsz")
            imgsz = max(recorded) if recorded else None
        self.imgsz = check_imgsz(imgsz)
        self._local = threading.local()

    @property
    def timing(self) -> dict:
        """This thread's last call: pre, infer and post milliseconds."""
        return getattr(self._local, "timing", {"pre": 0.0, "infer": 0.0, "post": 0.0})

    # ------------------------------------------------------------------ helpers
    def network_size(self, h: int, w: int) -> tuple[int, int]:
        """The size an h x w image is resized to before padding (`imgsz`; (h, w) when none applies)."""
        if isinstance(self.imgsz, tuple):
            return self.imgsz
        if isinstance(self.imgsz, int) and max(h, w) > self.imgsz:
            scale = self.imgsz / max(h, w)
            return max(1, round(h * scale)), max(1, round(w * scale))
        return h, w

    def _input_size(self, h: int, w: int, name: str) -> tuple[int, int]:
        hp, wp = padded_size(h, w, self.stride)
        if self.fixed_hw:
            fh, fw = self.fixed_hw
            if h > fh or w > fw:
                raise DeployError(f"{name}: image is {h}x{w} but {self.path.name} takes at most {fh}x{fw} (static export); "
                                  f"re-export with --dynamic or resize the images")
            return fh, fw
        return hp, wp

    def _run(self, images: list[np.ndarray], names: list[str], want_logits: bool) -> list[np.ndarray]:
        sources = [check_image(im, nm) for im, nm in zip(images, names)]
        t_resize = time.perf_counter()
        imgs = [resize_image(im, self.network_size(*im.shape[:2])) for im in sources]
        t_resize = time.perf_counter() - t_resize
        if want_logits and self.output_kind == "labels":
            raise DeployError(f"{self.path.name} outputs labels (exported with --output labels); "
                              f"export with --output logits to get logits")
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (im, nm) in enumerate(zip(imgs, names)):
            groups.setdefault(self._input_size(im.shape[0], im.shape[1], nm), []).append(i)
        results: list[np.ndarray | None] = [None] * len(imgs)
        pre, inf, post = t_resize, 0.0, 0.0
        for size, idx in groups.items():
            for k in range(0, len(idx), self.batch):
                chunk = idx[k:k + self.batch]
                t0 = time.perf_counter()
                batch = [imgs[i] for i in chunk]
                x = bgr_batch(batch, self.mean, size) if self.baked else normalize_batch(batch, self.mean, self.std, size)
                t1 = time.perf_counter()
                y = self.backend.run(x)
                t2 = time.perf_counter()
                for j, i in enumerate(chunk):
                    h, w = imgs[i].shape[:2]
                    if y.ndim == 3:  # labels graph: N x H x W
                        results[i] = y[j, :h, :w].astype(np.uint8, copy=False)
                    elif want_logits:
                        results[i] = np.ascontiguousarray(y[j, :, :h, :w], dtype=np.float32)
                    else:
                        results[i] = y[j, :, :h, :w].argmax(0).astype(np.uint8)
                    results[i] = resize_result(results[i], sources[i].shape[:2])
                t3 = time.perf_counter()
                pre, inf, post = pre + t1 - t0, inf + t2 - t1, post + t3 - t2
        self._local.timing = {"pre": pre * 1e3, "infer": inf * 1e3, "post": post * 1e3}
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ API
    def predict(self, images, names: list[str] | None = None) -> list[np.ndarray]:
        images = list(images)
        names = names or [f"image {i}" for i in range(len(images))]
        return self._run(images, names, want_logits=False)

    def predict_logits(self, images, names: list[str] | None = None) -> list[np.ndarray]:
        images = list(images)
        names = names or [f"image {i}" for i in range(len(images))]
        return self._run(images, names, want_logits=True)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """One image -> labels: the `predict(image) -> labels` callable evaluation loops take."""
        return self.predict([image])[0]

    def warmup(self, size: tuple[int, int] | None = None, runs: int = 2) -> None:
        h, w = size or self.fixed_hw or (256, 256)
        dummy = np.zeros((h, w, 3), np.uint8)
        for _ in range(runs):
            self.predict([dummy] * self.batch)

    def describe(self) -> str:
        m = self.meta
        return (f"{self.path.name}: {self.backend.name} ({', '.join(self.backend.providers)}), "
                f"precision {m.get('precision', '?')}, output {self.output_kind}, "
                f"input {'uint8 BGR NHWC' if self.baked else 'float32 RGB NCHW'}, {self.num_classes} classes, "
                f"network size {describe_imgsz(self.imgsz)}")
