"""Soak a live stream through the whole runtime: source, engine threads, annotated writer.

    python benchmarks/stream_soak.py --url rtsp://127.0.0.1:8554/live --model student.onnx [--frames 5000]

Reads `--frames` frames from the stream through `run_pipeline` (the path of `igldt infer`), writing an
annotated video in 60-s segments into a temporary folder, and prints one JSON line: frames read,
segmented and dropped as stale, resident memory and OS threads after `--warmup` segmented frames and
at the end, whether any frame was segmented twice. Run in a process of its own, so that the memory
and thread figures are this pipeline's (tests/runtime/test_streams.py runs it against a loopback server).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def proc_status(field: str) -> int:
    """A number from /proc/self/status (Linux): VmRSS in kB, Threads."""
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", type=int, default=5000, help="frames to read from the stream")
    ap.add_argument("--warmup", type=int, default=300, help="segmented frames before the first measurement")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from igldt.runtime import Predictor
    from igldt.runtime.pipeline import run_pipeline
    from igldt.runtime.sinks import ResultWriter
    from igldt.runtime.live import LiveSource, StreamPolicy

    predictor = Predictor(args.model, device="cpu", threads=1)
    src = LiveSource(args.url, policy=StreamPolicy(read_timeout=1.0))
    seen: list[int] = []
    probe: dict = {}

    class Counting(ResultWriter):
        def write(self, frame, labels, video_name="result"):
            super().write(frame, labels, video_name)
            seen.append(frame.index)
            if len(seen) == args.warmup:
                probe["warm"] = (proc_status("VmRSS") / 1024, proc_status("Threads"))
            if src.read >= args.frames and "end" not in probe:
                probe["end"] = (proc_status("VmRSS") / 1024, proc_status("Threads"))
                src.close()

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sink = Counting(tmp, predictor.palette, video=True, fps=src.fps, segment_frames=round(60 * src.fps))
        stats = run_pipeline(src, predictor, sink, workers=args.workers, video_name="stream")
        sink.close()
    wall = time.perf_counter() - t0
    (rss0, threads0), (rss1, threads1) = probe["warm"], probe["end"]
    print(json.dumps({"read": src.read, "segmented": len(seen), "dropped": src.dropped, "wall_s": round(wall, 1),
                      "fps": round(stats.fps, 1), "rss_warm_mb": round(rss0, 1), "rss_end_mb": round(rss1, 1),
                      "threads_warm": threads0, "threads_end": threads1, "outages": len(src.outages),
                      "segmented_twice": len(seen) - len(set(seen)), "in_order": seen == sorted(seen)}))


if __name__ == "__main__":
    main()
