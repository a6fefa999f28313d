"""Latency measurement on real images (torch-free): warm-up, then one timed call per image."""
from __future__ import annotations

import time

import numpy as np


def measure_latency(predictor, images: list[np.ndarray], runs: int = 50, warmup: int = 5) -> dict:
    """End-to-end `predict` latency (pre + inference + post) over `runs` calls cycling through `images`."""
    if not images:
        raise ValueError("no images to time")
    for i in range(warmup):
        predictor.predict([images[i % len(images)]])
    times, infer = [], []
    for i in range(runs):
        t0 = time.perf_counter()
        predictor.predict([images[i % len(images)]])
        times.append((time.perf_counter() - t0) * 1e3)
        infer.append(predictor.timing["infer"])
    t = np.asarray(times)
    return {"runs": runs, "warmup": warmup, "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean()), "fps": float(1e3 / t.mean()), "infer_p50_ms": float(np.percentile(infer, 50))}
