"""Latency measurement on real images (torch-free): warm-up, then one timed call per image."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

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


def measure_throughput(predictor, images: list[np.ndarray], workers: int = 1, frames: int = 200,
                       batch: int = 1) -> float:
    """Frames per second of `predict` on in-memory images, `batch` a call, `workers` calls in flight at
    once: the inference-only rate a video pipeline with the same workers is held against."""
    if not images:
        raise ValueError("no images to time")
    seq = [images[i % len(images)] for i in range(frames)]
    calls = [seq[i:i + batch] for i in range(0, frames, batch)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(predictor.predict, calls[: 2 * workers]))  # warm-up, every thread
        t0 = time.perf_counter()
        list(pool.map(predictor.predict, calls))
        return frames / (time.perf_counter() - t0)
