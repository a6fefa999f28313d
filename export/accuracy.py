"""Accuracy-aware INT8 (`igldt export --precision int8 --tolerance T`): quantise, score the INT8 graph
against the fp32 one on held-in labelled images, and leave the most sensitive layers in float one at
a time until the mIoU drop is at most T points, or give up at a maximum share of float layers.

The strategy of OpenVINO NNCF's `quantize_with_accuracy_control` and Intel Neural Compressor's basic
tuning: rank every quantised layer by the mIoU it gives back when it alone is left in float (on a few
ranking images: one quantisation and a short evaluation each, the calibration reused), then revert the
ranked layers one by one, re-measuring on all held-in images after each, and stop as soon as the
tolerance holds. Held-in images: the validation split recorded in the checkpoint (what it was tuned
on), or `--calib-val DIR`-style labelled data; never a test split.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .onnx import ExportError

RANK_IMAGES = 16   # images of the held-in set that rank the layers (each layer costs one pass over them)
MAX_FLOAT = 0.25   # default ceiling on the share of quantisable layers left in float
RANK_PROGRESS = 20  # a progress line every this many layers ranked (79 layers took ~3 minutes on 2 cores)


@dataclass
class Fit:
    """What the loop measured: mIoU in [0, 1], the ranking (layer, mIoU given back on the ranking images)
    and every step (layers in float, mIoU on the held-in set)."""
    fp32_miou: float
    int8_miou: float
    candidates: int
    ranking: list[tuple[str, float]] = field(default_factory=list)
    steps: list[tuple[int, float]] = field(default_factory=list)
    left_in_float: list[str] = field(default_factory=list)
    final_miou: float | None = None

    @property
    def delta_points(self) -> float:
        return 100 * ((self.final_miou if self.final_miou is not None else self.int8_miou) - self.fp32_miou)

    def summary(self) -> dict:
        return {"fp32_miou": self.fp32_miou, "int8_miou_all_layers": self.int8_miou, "final_miou": self.final_miou,
                "delta_miou_points": round(self.delta_points, 3), "left_in_float": self.left_in_float,
                "quantisable_layers": self.candidates,
                "ranking": [{"node": n, "gain_points": round(100 * g, 3)} for n, g in self.ranking[:10]],
                "steps": [{"float_layers": k, "miou": m} for k, m in self.steps]}


def rank_layers(quantize: Callable[[Sequence[str]], object], score: Callable[[object], float],
                candidates: Sequence[str], baseline: float,
                progress: Callable[[int, int], None] | None = None) -> list[tuple[str, float]]:
    """(layer, score(layer left in float) - baseline) for every candidate, the largest gain first (ties
    in graph order)."""
    gains = []
    for k, name in enumerate(candidates):
        gains.append((name, score(quantize([name])) - baseline))
        if progress:
            progress(k + 1, len(candidates))
    return sorted(gains, key=lambda g: -g[1])


def fit_tolerance(quantize: Callable[[Sequence[str]], object], score: Callable[[object], float],
                  rank_score: Callable[[object], float], candidates: Sequence[str], fp32_miou: float,
                  tolerance: float, max_float: float = MAX_FLOAT,
                  echo: Callable[[str], None] = print, names: dict[str, str] | None = None):
    """(the INT8 graph within `tolerance` mIoU points of fp32, Fit). `quantize(exclude)` builds a graph
    with the named layers in float, `score` / `rank_score` give its mIoU on the held-in / ranking images.
    Only a drop counts: an INT8 graph scoring higher than fp32 passes. Raises ExportError, naming the
    best drop reached, when `max_float` of the candidates in float is not enough. `names` (node -> layer)
    is what the progress lines call the layers."""
    proto = quantize([])
    fit = Fit(fp32_miou, score(proto), len(candidates))
    fit.steps.append((0, fit.int8_miou))
    echo(f"INT8 mIoU {100 * fit.int8_miou:.2f} against fp32 {100 * fp32_miou:.2f} ({fit.delta_points:+.2f} points, "
         f"tolerance {tolerance})")
    if fit.delta_points >= -tolerance:
        fit.final_miou = fit.int8_miou
        return proto, fit
    budget = int(max_float * len(candidates))
    echo(f"Ranking {len(candidates)} layers by the mIoU each gives back in float (on the ranking images)")
    fit.ranking = rank_layers(quantize, rank_score, candidates, rank_score(proto),
                              progress=lambda k, n: echo(f"  ranked {k} of {n}") if k % RANK_PROGRESS == 0 else None)
    best_miou, best_count = fit.int8_miou, 0
    for name, _ in fit.ranking[:budget]:
        fit.left_in_float.append(name)
        proto = quantize(fit.left_in_float)
        miou = score(proto)
        fit.steps.append((len(fit.left_in_float), miou))
        echo(f"  {len(fit.left_in_float)} in float (+ {(names or {}).get(name, name)}): mIoU {100 * miou:.2f} ({100 * (miou - fp32_miou):+.2f})")
        if miou > best_miou:
            best_miou, best_count = miou, len(fit.left_in_float)
        if 100 * (miou - fp32_miou) >= -tolerance:
            fit.final_miou = miou
            return proto, fit
    raise ExportError(f"--tolerance {tolerance}: INT8 stays {100 * (fit.fp32_miou - best_miou):.2f} mIoU points below "
                      f"fp32 at best ({best_count} of {len(candidates)} layers in float, the most --max-float "
                      f"{max_float:.0%} allows); raise --tolerance or --max-float, or export fp16")


def graph_scorer(meta: dict, dataset, limit: int | None, work: Path):
    """score(ModelProto) -> mIoU of the graph through the deployment runtime on `dataset` (its first
    `limit` items), the export metadata embedded so it runs as the final artefact will."""
    from igldt.runtime import Predictor

    from . import metadata as md
    from .onnx import save_model
    from .parity import engine_miou

    def score(proto) -> float:
        md.embed_in_onnx(proto, meta)
        with tempfile.NamedTemporaryFile(suffix=".onnx", dir=work, delete=False) as f:
            path = Path(f.name)
        try:
            save_model(proto, path)
            return engine_miou(Predictor(path, device="cpu"), dataset, limit=limit)
        finally:
            path.unlink(missing_ok=True)

    return score


def latency_ms(proto, imgsz: Sequence[int], runs: int = 20) -> float:
    """Median latency (ms) of one batch-1 forward of `proto` at `imgsz` with ONNX Runtime on the CPU:
    what the layers left in float cost."""
    import time

    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    if len(inp.shape) == 4 and inp.shape[-1] == 3:  # baked pre-processing: uint8 NHWC
        x = np.zeros((1, *imgsz, 3), np.uint8)
    else:
        x = np.zeros((1, 3, *imgsz), np.float32)
    for _ in range(3):
        session.run(None, {inp.name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {inp.name: x})
        times.append(1000 * (time.perf_counter() - t))
    return float(np.median(times))
