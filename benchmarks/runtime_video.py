"""Inference-only FPS vs end-to-end video FPS (decode -> infer -> encode) on a generated video.

    python benchmarks/runtime_video.py --model student.onnx [--frames 120] [--size 360 480] [--batch 1] [--workers 2]

Prints three figures: inference only (frames already decoded, no writing, `--workers` calls in
flight), the threaded pipeline of `igldt infer --workers` (decode, N inference threads, encode;
bounded queues) and, for contrast, the same work done sequentially. With overlap the pipeline stays
close to inference-only FPS.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_video(path: Path, frames: int, size: tuple[int, int], fps: float = 30.0) -> Path:
    """A moving street-like scene: sky, road, a car sliding across (enough texture to decode for real)."""
    h, w = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    for i in range(frames):
        f = np.empty((h, w, 3), np.uint8)
        f[: h // 2] = (235, 206, 135)
        f[h // 2:] = (90, 90, 90)
        x = int((i / max(frames - 1, 1)) * (w - w // 5))
        cv2.rectangle(f, (x, h // 2), (x + w // 5, h // 2 + h // 6), (30, 30, 200), -1)
        out.write(cv2.add(f, noise))
    out.release()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", type=int, nargs=2, default=(360, 480), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="engine threads (default: cores / workers)")
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()

    from igldt.runtime import Predictor
    from igldt.runtime.bench import measure_throughput
    from igldt.runtime.pipeline import run_pipeline
    from igldt.runtime.sinks import ResultWriter
    from igldt.runtime.sources import open_source

    threads = a.threads or (max(1, (os.cpu_count() or 1) // a.workers) if a.workers > 1 else None)
    p = Predictor(a.model, device=a.device, batch=a.batch, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "bench.mp4", a.frames, tuple(a.size))
        frames = [f.image for f in open_source(video)]
        p.warmup(tuple(a.size), runs=3)

        infer_fps = measure_throughput(p, frames, a.workers, frames=len(frames), batch=p.batch)

        src = open_source(video)
        sink = ResultWriter(Path(tmp) / "threaded", p.palette, video=True, fps=src.fps)
        stats = run_pipeline(src, p, sink, batch=p.batch, video_name="out", workers=a.workers)
        sink.close()

        src = open_source(video)
        sink = ResultWriter(Path(tmp) / "sequential", p.palette, video=True, fps=src.fps)
        t0 = time.perf_counter()
        n = 0
        for f in src:
            sink.write(f, p.predict([f.image])[0], "out")
            n += 1
        sink.close()
        seq_fps = n / (time.perf_counter() - t0)

    print(f"{p.describe()}")
    print(f"video {a.frames} frames {a.size[0]}x{a.size[1]}, batch {p.batch}, {a.workers} worker(s)")
    print(f"inference only          : {infer_fps:7.1f} FPS")
    print(f"end to end, threaded    : {stats.fps:7.1f} FPS ({100 * stats.fps / infer_fps:.0f}% of inference only)")
    print(f"end to end, sequential  : {seq_fps:7.1f} FPS")


if __name__ == "__main__":
    main()
