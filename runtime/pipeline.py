"""Decode -> infer -> encode on their own threads with bounded queues.

OpenCV decoding/encoding and the inference engines release the GIL, so the stages overlap and
end-to-end FPS stays close to inference-only FPS. Bounded queues keep memory flat and pass
back-pressure to the decoder; live sources drop stale frames in their own reader instead.

`workers` > 1 segments that many batches at once, each on its own thread (give each engine session
one CPU thread then: `Predictor(threads=1)`). On a 2-core CPU two single-threaded sessions beat one
session on two threads, whose threads wait for each other at every operator and stall whenever the
encoder takes a core (docs/results.md, "Video"). The encoder writes frames back in source order.
"""
from __future__ import annotations

import heapq
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
    workers: int = 1
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM: the frames so far are written, the sink left open
    timings: list = field(default_factory=list)  # per-batch (pre, infer, post) ms

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def infer_fps(self) -> float:
        """Frames per second the engine alone would give: engine time per frame, `workers` frames at once."""
        return self.workers * self.frames / (self.infer_ms / 1e3) if self.infer_ms else 0.0

    def add(self, n: int, t: dict) -> None:
        self.frames += n
        self.pre_ms += t["pre"]
        self.infer_ms += t["infer"]
        self.post_ms += t["post"]
        self.timings.append((t["pre"], t["infer"], t["post"], n))


class _Stages:
    """The shared state of one run: queues, the stop flag, the first error."""

    def __init__(self, queue_size: int, batch: int):
        self.q_in: queue.Queue = queue.Queue(maxsize=max(queue_size, 2 * batch))
        self.q_out: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()

    def put(self, q: queue.Queue, item) -> bool:
        """Put unless the run stops first (a full queue never blocks a stopping run)."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fail(self, e: BaseException) -> None:
        self.errors.append(e)
        self.stop.set()


def _decode(source, s: _Stages) -> None:
    try:
        for seq, frame in enumerate(source):
            if not s.put(s.q_in, (seq, frame)):
                break
    except BaseException as e:
        s.fail(e)
    finally:
        if not s.stop.is_set():
            s.put(s.q_in, _END)


def _next_batch(source, s: _Stages, batch: int) -> list | None:
    """Up to `batch` decoded (seq, frame) items; None at the end of the source (the end marker is put
    back for the other workers). Live sources take what is decoded now instead of waiting for more."""
    item = None
    while item is None:
        if s.stop.is_set():
            return None
        try:
            item = s.q_in.get(timeout=0.1)
        except queue.Empty:
            continue
    if item is _END:
        s.q_in.put(_END)
        return None
    items = [item]
    while len(items) < batch:
        try:
            item = s.q_in.get(timeout=0 if source.live else None)
        except queue.Empty:
            break
        if item is _END:
            s.q_in.put(_END)
            break
        items.append(item)
    return items


def _segment(source, predictor, s: _Stages, stats: PipelineStats, batch: int, on_batch) -> None:
    try:
        while not s.stop.is_set():
            items = _next_batch(source, s, batch)
            if items is None:
                return
            frames = [f for _, f in items]
            labels = predictor.predict([f.image for f in frames], [f.path or f.name for f in frames])
            t = predictor.timing  # this thread's call (Predictor keeps timing per thread)
            with s.lock:
                stats.add(len(frames), t)
            if not s.put(s.q_out, [(seq, f, lab) for (seq, f), lab in zip(items, labels)]):
                return
            if on_batch:
                on_batch(len(frames), t)
    except BaseException as e:
        s.fail(e)


def _encode(sink, s: _Stages, video_name: str) -> None:
    """Write results in source order: batches from several workers arrive out of order. Once the run
    stops, what is already queued is written and the thread ends (never blocked on an empty queue)."""
    pending: list = []
    next_seq = 0
    try:
        while True:
            try:
                item = s.q_out.get(timeout=0.1)
            except queue.Empty:
                if s.stop.is_set():
                    return
                continue
            if item is _END:
                return
            for seq, frame, labels in item:
                heapq.heappush(pending, (seq, frame, labels))  # seq is unique: frames are never compared
            while pending and pending[0][0] == next_seq:
                _, frame, labels = heapq.heappop(pending)
                if sink is not None:
                    sink.write(frame, labels, video_name)
                next_seq += 1
    except BaseException as e:
        s.fail(e)


def run_pipeline(source, predictor, sink=None, batch: int = 1, queue_size: int = 8,
                 on_batch: Callable[[int, dict], None] | None = None, video_name: str = "result",
                 workers: int = 1) -> PipelineStats:
    """Run every frame of `source` through `predictor` on `workers` threads; `sink.write(frame, labels)`
    on the encode thread, in source order. A KeyboardInterrupt (Ctrl-C, or SIGTERM where the caller maps
    it) stops the run cleanly: every thread ends, and the stats come back with `interrupted` set."""
    s = _Stages(max(queue_size, 2 * workers * batch), batch)
    workers = max(1, workers)
    stats = PipelineStats(workers=workers)
    t_dec = threading.Thread(target=_decode, args=(source, s), name="igldt-decode", daemon=True)
    t_enc = threading.Thread(target=_encode, args=(sink, s, video_name), name="igldt-encode", daemon=True)
    segmenters = [threading.Thread(target=_segment, args=(source, predictor, s, stats, batch, on_batch),
                                   name=f"igldt-infer-{i}", daemon=True) for i in range(workers)]
    t0 = time.perf_counter()
    t_dec.start()
    t_enc.start()
    for t in segmenters:
        t.start()
    try:
        for t in segmenters:
            while t.is_alive():  # join in slices so that Ctrl-C reaches this thread
                t.join(timeout=0.2)
    except KeyboardInterrupt:
        stats.interrupted = True
    except BaseException:
        s.stop.set()
        raise
    finally:
        if not s.stop.is_set() and not stats.interrupted:
            s.put(s.q_out, _END)
        s.stop.set()
        t_enc.join()  # after what was queued is written: the sink is the caller's to close
        source.close()
        t_dec.join(timeout=2)
        stats.wall_s = time.perf_counter() - t0
    if s.errors:
        e = s.errors[0]
        if isinstance(e, DeployError):
            raise e
        raise DeployError(f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    return stats
