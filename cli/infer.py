"""`igldt infer`: segment images, folders, globs, videos, cameras or streams with an exported model.

Imports no torch unless the model is a .pt checkpoint, so it runs on an edge box with only
numpy, OpenCV and an inference engine.
"""
from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from igldt.runtime.live import StreamPolicy

from .common import hint


VIDEO_CODECS = {"avc1": "H.264 (avc1)", "H264": "H.264", "X264": "H.264", "mp4v": "mp4v (not for browsers)"}
LIVE_SEGMENT_S = 60.0  # --segment's default for cameras and streams: a kill loses at most a minute of video
_TERMINATED = []       # set by the SIGTERM handler: the summary names what stopped the run


def parse_imgsz(value: str) -> int | tuple[int, int] | str | None:
    """--imgsz: auto | native | L (longest side) | HxW."""
    v = value.strip().lower()
    if v in ("auto", "native"):
        return None if v == "native" else "auto"
    try:
        parts = [int(x) for x in v.replace(",", "x").split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise click.BadParameter(f"{value!r}: use auto, native, a longest side (640) or HxW (360x480)",
                                 param_hint="--imgsz")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def increment_path(path: Path, exist_ok: bool = False) -> Path:
    """runs/infer/exp -> exp2, exp3, ... when the folder already holds results (never overwrite silently)."""
    if exist_ok or not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return path
    n = 2
    while (candidate := path.with_name(f"{path.name}{n}")).exists():
        n += 1
    return candidate


@click.command()
@click.argument("source")
@click.option("--model", required=True, type=click.Path(), help="student.onnx | student.plan | student.pt")
@click.option("--out", type=click.Path(file_okay=False), default="runs/infer/exp", show_default=True,
              help="Run folder; a new numbered one (exp2, ...) if it already holds results.")
@click.option("--exist-ok", is_flag=True, help="Write into --out even if it holds results.")
@click.option("--save-masks", is_flag=True, help="Label PNGs (palette-indexed: pixel = class id).")
@click.option("--raw-ids", is_flag=True, help="With --save-masks: plain grayscale ids instead of a palette PNG.")
@click.option("--save-overlay", is_flag=True, help="Colour overlays (JPEG).")
@click.option("--save-video", is_flag=True, help="Annotated MP4 at the source frame rate (video / camera / stream); "
                                                 "H.264 where this OpenCV can encode it, else mp4v.")
@click.option("--show", is_flag=True, help="Show results in a window (needs a display).")
@click.option("--vid-stride", type=int, default=1, show_default=True, help="Use every N-th video frame.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--batch", type=int, default=1, show_default=True, help="Frames per inference call.")
@click.option("--imgsz", default="auto", show_default=True,
              help="Size the network sees (results come back at the source size): auto = the export size as "
                   "longest side, larger frames scaled down; native = every frame as it is; 640 = longest side; "
                   "360x480 = exact.")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Overlay opacity.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Frames segmented at once, each on its own thread with cores/N engine threads. On a CPU, "
                   "2+ raises video throughput (higher latency per frame: keep 1 for a live camera).")
@click.option("--stream-timeout", type=float, default=StreamPolicy.read_timeout, show_default=True,
              help="Camera/stream: seconds without a frame that make an outage (a stall), then reconnect.")
@click.option("--reconnect", type=int, default=StreamPolicy.retries, show_default=True,
              help="Camera/stream: reconnect attempts per outage (backoff 0.5 s doubling to 8 s) before "
                   "giving up with an error.")
@click.option("--segment", type=float, default=None,
              help="--save-video: close the video every this many seconds of frames (name_000.mp4, ...) so a "
                   "killed run keeps every closed segment. Default: 60 for a camera or stream, one file "
                   "for a video; 0 = one file.")
def infer(source, model, out, exist_ok, save_masks, raw_ids, save_overlay, save_video, show, vid_stride, device,
          batch, imgsz, alpha, workers, stream_timeout, reconnect, segment):
    """Segment SOURCE: an image, a folder, a glob, a video, a camera index (0) or an rtsp/http URL.

    Grayscale, RGBA and 16-bit image files are converted to 8-bit RGB (one note per kind).
    Videos are written as H.264 where this OpenCV can encode it, else mp4v (with a note).
    A camera or stream that drops is reconnected (one line per outage); Ctrl-C or SIGTERM stops
    the run with every output closed and its summary printed."""
    from igldt.runtime import DeployError, Predictor
    from igldt.runtime.sinks import ResultWriter
    from igldt.runtime.sources import open_source

    if vid_stride < 1 or batch < 1 or workers < 1:
        raise click.BadParameter("must be >= 1", param_hint="--vid-stride/--batch/--workers")
    if stream_timeout <= 0 or reconnect < 0 or (segment is not None and segment < 0):
        raise click.BadParameter("--stream-timeout must be > 0, --reconnect and --segment >= 0",
                                 param_hint="--stream-timeout/--reconnect/--segment")
    quiet_video_logs()
    # Several workers share the cores: one engine thread each on a 2-core box, not 2 x 2 fighting.
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    try:
        predictor = Predictor(model, device=device, batch=batch, imgsz=parse_imgsz(imgsz), threads=threads)
        policy = StreamPolicy(read_timeout=stream_timeout, retries=reconnect)
        src = open_source(source, vid_stride, convert_images=True, note=_note, policy=policy)
        save_masks, save_video = _chosen_outputs(src, source, save_masks, save_overlay, save_video, show)
        run_dir = increment_path(Path(out), exist_ok)
        fps = (src.fps / vid_stride) if (src.fps and src.kind == "video") else src.fps
        segment = (LIVE_SEGMENT_S if src.live else 0) if segment is None else segment
        writer = ResultWriter(run_dir, predictor.palette, masks=save_masks, raw_ids=raw_ids, overlays=save_overlay,
                              video=save_video, fps=fps, show=show, alpha=alpha, note=_note,
                              segment_frames=round(segment * (fps or 30.0)))
        click.echo(predictor.describe())
        with sigterm_as_interrupt():
            stats = _segment(src, source, predictor, writer, workers)
    except DeployError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:  # before the run started: nothing to close
        click.echo("interrupted")
        return
    if stats.interrupted:
        click.echo(f"stopped by {'SIGTERM' if _TERMINATED else 'Ctrl-C'}; every output closed")
    _print_stats(stats, writer, src)
    if writer.written and (save_masks or save_overlay or save_video):
        click.secho(f"Results saved to {run_dir}", fg="green")
        hint(f"igldt evaluate --engine {model} --data ROOT --dataset NAME")


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (systemd, docker stop, kill) stops the run like Ctrl-C: outputs closed, summary printed."""
    def on_term(signum, frame):
        _TERMINATED.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (an embedding program): leave its signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def quiet_video_logs() -> None:
    """Keep FFmpeg's and OpenCV's own messages (a warning per failed reconnect, decoder complaints) off
    the terminal: each outage is one line of ours. `OPENCV_FFMPEG_LOGLEVEL=24 igldt infer ...` shows
    FFmpeg's warnings again (AV_LOG_* levels)."""
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg next opens
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _note(message: str) -> None:
    """One line above the progress bar, not through it."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _chosen_outputs(src, source: str, save_masks: bool, save_overlay: bool, save_video: bool,
                    show: bool) -> tuple[bool, bool]:
    """(save_masks, save_video): --save-video refused for images; with nothing chosen, the obvious
    result of the source (masks of images, the video of a video)."""
    from igldt.runtime import DeployError

    is_video = src.kind in ("video", "camera", "stream")
    if save_video and not is_video:
        raise DeployError(f"--save-video needs a video, camera or stream source; {source} is images "
                          f"(use --save-overlay)")
    if not (save_masks or save_overlay or save_video or show):
        return not is_video, is_video
    return save_masks, save_video


def _segment(src, source: str, predictor, writer, workers: int):
    """Every frame through the pipeline under a progress bar with per-stage times; the writer closed after."""
    from tqdm import tqdm

    from igldt.runtime.pipeline import run_pipeline

    bar = tqdm(total=src.count, unit="frame", desc=f"{src.kind} {source}", dynamic_ncols=True)

    def on_batch(n, t):
        bar.update(n)
        per = 1.0 / n
        bar.set_postfix_str(f"pre {t['pre'] * per:.1f}ms infer {t['infer'] * per:.1f}ms post {t['post'] * per:.1f}ms")

    video_name = Path(str(source)).stem if src.kind == "video" else src.kind
    try:
        return run_pipeline(src, predictor, writer, batch=predictor.batch, on_batch=on_batch, video_name=video_name,
                            workers=workers)
    finally:
        bar.close()
        writer.close()


def _print_stats(stats, writer, src) -> None:
    frames = max(stats.frames, 1)
    click.echo(f"{stats.frames} frames in {stats.wall_s:.2f}s: {stats.fps:.1f} FPS end to end, "
               f"{stats.infer_fps:.1f} FPS inference only "
               f"(per frame: pre {stats.pre_ms / frames:.1f}ms, infer {stats.infer_ms / frames:.1f}ms, "
               f"post {stats.post_ms / frames:.1f}ms)")
    if src.live:
        lost = sum(o.lasted for o in src.outages)
        click.echo(f"{src.what}: {src.read} frames read, {src.dropped} dropped as stale, {len(src.outages)} "
                   f"outage(s) lasting {lost:.1f}s in all")
    if writer.video_paths:
        codec = VIDEO_CODECS.get(writer.video_codec, writer.video_codec)
        more = f" ({len(writer.video_paths)} segments, the last {writer.video_paths[-1].name})" \
            if len(writer.video_paths) > 1 else ""
        click.echo(f"video {writer.video_paths[0]}{more}: {codec}")
