"""Inference-only FPS vs end-to-end video FPS (decode -> infer -> encode) on a generated or real video.

    python benchmarks/runtime_video.py --model student.onnx [--video val.mp4 | --frames 120 --size 360 480]
                                       [--batch 1] [--workers 2] [--rounds 5] [--profile]

Prints inference only (frames already decoded, no writing, `--workers` calls in flight) and the
threaded pipeline of `igldt infer --save-video --workers` (decode, N inference threads, overlay and
encode; bounded queues), medians of `--rounds` interleaved rounds; for contrast the same work done
sequentially; with `--profile`, the CPU each stage of the video path takes per frame.
"""
from __future__ import annotations

import argparse
import os
import statistics
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


def profile_stages(p, video: Path, tmp: Path) -> dict:
    """Process CPU ms per frame (every thread: FFmpeg decodes and encodes on its own) of each stage of
    `igldt infer --save-video`, run one after the other as the pipeline's threads run them: decode,
    BGR->RGB for the engine, the predictor (pre, engine, post), the overlay drawn on the BGR frame, and
    the encoder."""
    from igldt.runtime.sinks import open_video_writer, overlay
    from igldt.runtime.frames import open_decoder

    cap = open_decoder(str(video))
    cpu: dict[str, float] = {}
    writer, n = None, 0

    def timed(name, fn, *args):
        t = time.process_time_ns()
        out = fn(*args)
        cpu[name] = cpu.get(name, 0.0) + (time.process_time_ns() - t) / 1e6
        return out

    while True:
        ok, bgr = timed("decode", cap.read)
        if not ok:
            break
        rgb = timed("to RGB", cv2.cvtColor, bgr, cv2.COLOR_BGR2RGB)
        labels = timed("predict", p.predict, [rgb])[0]
        out = timed("overlay", overlay, bgr, labels, p.palette[:, ::-1])
        if writer is None:
            writer, _ = open_video_writer(tmp / "profile.mp4", 30.0, (out.shape[1], out.shape[0]))
        timed("encode", writer.write, out)
        n += 1
    writer.release()
    cap.release()
    return {k: v / n for k, v in cpu.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", type=int, nargs=2, default=(360, 480), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="engine threads (default: cores / workers)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--video", type=Path, default=None, help="a real video instead of the generated one")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of inference-only and video")
    ap.add_argument("--profile", action="store_true",
                    help="also the CPU time of each stage of the video path, per frame, on one thread")
    a = ap.parse_args()

    from igldt.runtime import Predictor
    from igldt.runtime.bench import measure_throughput
    from igldt.runtime.pipeline import run_pipeline
    from igldt.runtime.sinks import ResultWriter
    from igldt.runtime.sources import open_source

    threads = a.threads or (max(1, (os.cpu_count() or 1) // a.workers) if a.workers > 1 else None)
    p = Predictor(a.model, device=a.device, batch=a.batch, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        video = a.video or make_video(Path(tmp) / "bench.mp4", a.frames, tuple(a.size))
        frames = [f.image for f in open_source(video)]
        a.frames, a.size = len(frames), frames[0].shape[:2]
        p.warmup(tuple(a.size), runs=3)

        infer, video_fps = [], []
        for _ in range(a.rounds):  # interleaved: this machine's speed drifts over minutes
            infer.append(measure_throughput(p, frames, a.workers, frames=len(frames), batch=p.batch))
            src = open_source(video)
            sink = ResultWriter(Path(tmp) / "threaded", p.palette, video=True, fps=src.fps)
            video_fps.append(run_pipeline(src, p, sink, batch=p.batch, video_name="out", workers=a.workers).fps)
            sink.close()
        infer_fps, end_fps = statistics.median(infer), statistics.median(video_fps)
        ratios = [v / i for v, i in zip(video_fps, infer)]

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
    print(f"inference only          : {infer_fps:7.1f} FPS (median of {a.rounds}: "
          f"{', '.join(f'{x:.1f}' for x in infer)})")
    print(f"end to end, threaded    : {end_fps:7.1f} FPS (median of {a.rounds}: {', '.join(f'{x:.1f}' for x in video_fps)})"
          f"; {100 * statistics.median(ratios):.0f}% of inference only, median of the rounds' ratios "
          f"({', '.join(f'{100 * r:.0f}' for r in ratios)})")
    print(f"end to end, sequential  : {seq_fps:7.1f} FPS")
    if a.profile:
        with tempfile.TemporaryDirectory() as tmp:
            per_stage = profile_stages(p, video if a.video else make_video(Path(tmp) / "b.mp4", a.frames, tuple(a.size)),
                                       Path(tmp))
        total = sum(per_stage.values())
        print("CPU per frame, stages one after the other (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in per_stage.items())
              + f"; total {total:.2f}")


if __name__ == "__main__":
    main()
