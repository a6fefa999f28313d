"""Decode -> infer -> encode on three threads with bounded queues.

OpenCV decoding/encoding and the inference engines release the GIL, so the three stages overlap
and end-to-end FPS stays close to inference-only FPS. Bounded queues keep memory flat and pass
back-pressure to the decoder; live sources drop stale frames in their own reader instead.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import DeployError

_END = object()


@dataclass
class PipelineStats:
    frames: int = 0
    wall_s: float = 0.0
    pre_ms: float = 0.0
    infer_ms: float = 0.0
    post_ms: float = 0.0
    timings: list = field(default_factory=list)  # per-batch (pre, infer, post) ms

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def infer_fps(self) -> float:
        return self.frames / (self.infer_ms / 1e3) if self.infer_ms else 0.0


def run_pipeline(source, predictor, sink=None, batch: int = 1, queue_size: int = 8,
                 on_batch: Callable[[int, dict], None] | None = None, video_name: str = "result") -> PipelineStats:
    """Run every frame of `source` through `predictor`; `sink.write(frame, labels)` on the encode thread."""
    q_in: queue.Queue = queue.Queue(maxsize=max(queue_size, 2 * batch))
    q_out: queue.Queue = queue.Queue(maxsize=queue_size)
    stop = threading.Event()
    errors: list[BaseException] = []

    def put(q, item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode():
        try:
            for frame in source:
                if not put(q_in, frame):
                    break
        except BaseException as e:
            errors.append(e)
        finally:
            put(q_in, _END) if not stop.is_set() else None

    def encode():
        try:
            while True:
                item = q_out.get()
                if item is _END:
                    return
                if sink is not None:
                    for frame, labels in zip(*item):
                        sink.write(frame, labels, video_name)
        except BaseException as e:
            errors.append(e)
            stop.set()

    stats = PipelineStats()
    t_dec = threading.Thread(target=decode, name="igldt-decode", daemon=True)
    t_enc = threading.Thread(target=encode, name="igldt-encode", daemon=True)
    t0 = time.perf_counter()
    t_dec.start()
    t_enc.start()
    ended = False
    try:
        while not ended and not stop.is_set():
            frames = []
            item = q_in.get()
            if item is _END:
                break
            frames.append(item)
            while len(frames) < batch:  # fill the batch with what is already decoded, or wait for files
                try:
                    item = q_in.get(timeout=0 if source.live else None)
                except queue.Empty:
                    break
                if item is _END:
                    ended = True
                    break
                frames.append(item)
            labels = predictor.predict([f.image for f in frames], [f.path or f.name for f in frames])
            t = predictor.timing
            stats.frames += len(frames)
            stats.pre_ms += t["pre"]
            stats.infer_ms += t["infer"]
            stats.post_ms += t["post"]
            stats.timings.append((t["pre"], t["infer"], t["post"], len(frames)))
            if not put(q_out, (frames, labels)):
                break
            if on_batch:
                on_batch(len(frames), t)
    except BaseException:
        stop.set()
        raise
    finally:
        if not stop.is_set():
            put(q_out, _END)
            t_enc.join()
        stop.set()
        source.close()
        t_dec.join(timeout=2)
        stats.wall_s = time.perf_counter() - t0
    if errors:
        e = errors[0]
        if isinstance(e, DeployError):
            raise e
        raise DeployError(f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    return stats
