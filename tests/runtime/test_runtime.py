"""Deployment runtime on a tiny hand-built ONNX graph: no torch, no export, fast."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from igldt.runtime import DeployError, Predictor  # noqa: E402
from igldt.runtime.metadata import sidecar_path  # noqa: E402
from igldt.runtime.pipeline import run_pipeline  # noqa: E402
from igldt.runtime import sinks  # noqa: E402
from igldt.runtime.sinks import ResultWriter, write_palette_png  # noqa: E402
from igldt.runtime.live import LiveSource, StreamPolicy  # noqa: E402
from igldt.runtime.sources import Frame, open_source  # noqa: E402

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
CLASSES = ["red", "green", "blue"]
PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
REPO = Path(__file__).resolve().parents[2]


def tiny_onnx(path: Path, stride: int = 8, embed: bool = True, sidecar: bool = False) -> Path:
    """logits = 2x2 average pool then nearest upsample of the normalised input: class = strongest channel,
    and the stride-2 pooling makes results depend on correct padding/cropping."""
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    nodes = [helper.make_node("AveragePool", ["images"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["p", "", "scales"], ["logits"], mode="nearest")]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = {"format": "igldt-deploy/1", "classes": CLASSES, "palette": PALETTE, "mean": MEAN, "std": STD,
            "stride": stride, "precision": "fp32", "input": {"name": "images", "layout": "NCHW", "dtype": "float32"},
            "output": {"kind": "logits"}}
    if embed:
        e = model.metadata_props.add()
        e.key, e.value = "igldt", json.dumps(meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    if sidecar:
        sidecar_path(path).write_text(json.dumps(meta))
    return path


def expected_logits(img: np.ndarray, stride: int = 8) -> np.ndarray:
    """The same computation in numpy: pad (zeros after normalising), 2x2 mean, upsample, argmax, crop."""
    h, w = img.shape[:2]
    hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
    x = np.zeros((hp, wp, 3), np.float32)
    x[:h, :w] = (img / np.float32(255) - np.float32(MEAN)) / np.float32(STD)
    p = x.reshape(hp // 2, 2, wp // 2, 2, 3).mean((1, 3))
    up = p.repeat(2, 0).repeat(2, 1)
    return up[:h, :w].transpose(2, 0, 1)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("m") / "tiny.onnx")


def rand_img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_predict_pads_crops_and_batches(model):
    p = Predictor(model, device="cpu", batch=4, threads=1)
    imgs = [rand_img(50, 70, 1), rand_img(64, 64, 2), rand_img(50, 70, 3), rand_img(13, 9, 4)]
    out, logits = p.predict(imgs), p.predict_logits(imgs)
    for img, lab, lg in zip(imgs, out, logits):
        ref = expected_logits(img)
        assert lab.shape == img.shape[:2] and lab.dtype == np.uint8
        assert lg.shape == ref.shape and lg.dtype == np.float32
        np.testing.assert_allclose(lg, ref, atol=1e-5)
        clear = np.sort(ref, 0)[-1] - np.sort(ref, 0)[-2] > 1e-4  # ignore exact float ties
        np.testing.assert_array_equal(lab[clear], ref.argmax(0)[clear])
    assert p.classes == CLASSES and p.palette.tolist() == PALETTE
    assert set(p.timing) == {"pre", "infer", "post"}


def test_sidecar_wins_over_embedded(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx", embed=True, sidecar=True)
    side = json.loads(sidecar_path(path).read_text())
    side["classes"] = ["a", "b", "c"]
    sidecar_path(path).write_text(json.dumps(side))
    assert Predictor(path, device="cpu").classes == ["a", "b", "c"]


def test_model_file_errors(tmp_path):
    with pytest.raises(DeployError, match="not found"):
        Predictor(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf" * 10)
    with pytest.raises(DeployError, match=r"bad\.onnx cannot be loaded"):
        Predictor(bad, device="cpu")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(DeployError, match="empty"):
        Predictor(tmp_path / "empty.onnx")
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(DeployError, match="unknown type"):
        Predictor(tmp_path / "m.tflite")
    for e in (DeployError("x"),):
        assert "\n" not in str(e)


def test_wrong_channel_count_named(model, tmp_path):
    p = Predictor(model, device="cpu")
    with pytest.raises(DeployError, match="4 channels"):
        p.predict([np.zeros((8, 8, 4), np.uint8)], ["frame.png"])
    with pytest.raises(DeployError, match="grayscale"):
        p.predict([np.zeros((8, 8), np.uint8)])
    with pytest.raises(DeployError, match="uint16"):  # the Python API converts nothing; the CLI does
        p.predict([np.zeros((8, 8, 3), np.uint16)])
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(DeployError, match=r"rgba\.png.*4 channels"):
        next(iter(open_source(rgba)))


def _write_video(path: Path, n: int = 12, size=(48, 64), fps: float = 10.0) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    assert w.isOpened()
    for i in range(n):
        f = np.zeros((*size, 3), np.uint8)
        f[:, : 4 + 4 * i] = (0, 0, 255)  # a red bar growing to the right (BGR)
        w.write(f)
    w.release()
    return path


def test_sources_image_folder_glob_video(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), rand_img(20, 30, i))
    assert open_source(tmp_path / "im0.png").count == 1
    assert [f.name for f in open_source(tmp_path)] == ["im0", "im1", "im2"]
    assert open_source(str(tmp_path / "im[12].png")).count == 2
    video = _write_video(tmp_path / "v.mp4")
    frames = list(open_source(video))
    assert len(frames) == 12 and frames[0].image.shape == (48, 64, 3)
    assert [f.index for f in open_source(video, vid_stride=3)] == [0, 3, 6, 9]
    with pytest.raises(DeployError, match="does not exist"):
        open_source(tmp_path / "nope.jpg")


def test_unreadable_video_and_missing_camera_fail_fast(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(DeployError, match=r"junk\.mp4 cannot be read"):
        open_source(junk)
    t0 = time.perf_counter()
    with pytest.raises(DeployError, match="camera 99 cannot be opened"):
        open_source(99)
    assert time.perf_counter() - t0 < 5


def test_live_reader_keeps_newest_and_stops(tmp_path):
    video = _write_video(tmp_path / "live.mp4", n=30)
    src = LiveSource(str(video), policy=StreamPolicy(backoff=0.01), note=lambda m: None)  # a file as a stream
    got = []
    for frame in src:
        got.append(frame)
        time.sleep(0.02)  # a slow consumer: the reader drops stale frames instead of queueing them
        if len(got) == 5:
            break
    src.close()
    assert len(got) == 5 and not src._thread.is_alive()


def test_palette_png_roundtrip(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    labels = np.random.default_rng(0).integers(0, 3, (17, 23), dtype=np.uint8)
    write_palette_png(tmp_path / "m.png", labels, np.asarray(PALETTE, np.uint8))
    im = Image.open(tmp_path / "m.png")
    assert im.mode == "P"
    np.testing.assert_array_equal(np.asarray(im), labels)
    assert im.getpalette()[:9] == [255, 0, 0, 0, 255, 0, 0, 0, 255]


def test_video_pipeline_writes_annotated_video(model, tmp_path):
    video = _write_video(tmp_path / "v.mp4", n=12)
    p = Predictor(model, device="cpu", batch=2, threads=1)
    src = open_source(video)
    sink = ResultWriter(tmp_path / "out", p.palette, masks=True, video=True, fps=src.fps)
    stats = run_pipeline(src, p, sink, batch=2, video_name="v")
    sink.close()
    assert stats.frames == 12 and stats.fps > 0
    cap = cv2.VideoCapture(str(tmp_path / "out" / "v.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and abs(cap.get(cv2.CAP_PROP_FPS) - 10) < 0.5
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 12


class _Recorder:
    """A sink that keeps the order frames arrive in."""

    def __init__(self):
        self.names: list[str] = []

    def write(self, frame, labels, video_name):
        self.names.append(frame.name)


def test_workers_segment_in_parallel_and_write_in_source_order(model, tmp_path, monkeypatch):
    """--workers: several inference threads, each result the one of its own frame, written in order
    even when a later frame finishes first (the first calls are slowed down here)."""
    video = _write_video(tmp_path / "v.mp4", n=17)
    p = Predictor(model, device="cpu", threads=1)
    frames = list(open_source(video))
    run, calls = p.backend.run, []

    def uneven(x):  # the first batches finish last
        calls.append(1)
        time.sleep(0.05 if len(calls) <= 2 else 0.0)
        return run(x)

    monkeypatch.setattr(p.backend, "run", uneven)
    sink = _Recorder()
    stats = run_pipeline(open_source(video), p, sink, batch=2, video_name="v", workers=3)
    assert stats.frames == 17 and sink.names == [f.name for f in frames]
    monkeypatch.setattr(p.backend, "run", run)
    got = {}

    class Keep(_Recorder):
        def write(self, frame, labels, video_name):
            got[frame.name] = labels

    run_pipeline(open_source(video), p, Keep(), batch=1, workers=2)
    for f in frames:  # each frame's own labels, not a neighbour's
        np.testing.assert_array_equal(got[f.name], p.predict([f.image])[0])


def test_throughput_calls_predict_on_every_frame_from_each_worker():
    from igldt.runtime.bench import measure_throughput

    class Counting:
        def __init__(self):
            self.sizes, self.threads = [], set()

        def predict(self, images):
            import threading
            self.sizes.append(len(images))
            self.threads.add(threading.get_ident())
            time.sleep(0.002)
            return [np.zeros(im.shape[:2], np.uint8) for im in images]

    p = Counting()
    fps = measure_throughput(p, [rand_img(8, 8)], workers=2, frames=20, batch=3)
    assert fps > 0 and sum(p.sizes[-7:]) == 20 and max(p.sizes) == 3 and len(p.threads) == 2


def test_video_close_from_another_thread_waits_for_the_read(tmp_path):
    """The pipeline closes a video from its own thread while the decoder reads: releasing the capture
    during read() deadlocked FFmpeg (CI hung in the test below), so close() waits for the read."""
    import threading

    source = open_source(_write_video(tmp_path / "v.mp4", n=3))
    in_read, overlaps = threading.Event(), []

    class SlowCapture:  # the real capture, with a read slow enough for close() to land inside it
        def __init__(self, cap):
            self.cap, self.reading = cap, False

        def read(self):
            self.reading = True
            in_read.set()
            time.sleep(0.3)
            self.reading = False
            return self.cap.read()

        def grab(self):
            return self.cap.grab()

        def release(self):
            overlaps.append(self.reading)
            self.cap.release()

    source.cap = SlowCapture(source.cap)
    frames = iter(source)
    next(frames)  # the first frame was read on opening; the next one reads on the decoder thread
    decoder = threading.Thread(target=lambda: list(frames), daemon=True)
    decoder.start()
    assert in_read.wait(5)
    source.close()
    decoder.join(5)
    assert overlaps and not any(overlaps) and not decoder.is_alive()


def test_a_failing_worker_stops_the_run_with_its_error(model, tmp_path, monkeypatch):
    video = _write_video(tmp_path / "v.mp4", n=9)
    p = Predictor(model, device="cpu", threads=1)

    def broken(x):
        raise DeployError("engine exploded")

    monkeypatch.setattr(p.backend, "run", broken)
    with pytest.raises(DeployError, match="engine exploded"):
        run_pipeline(open_source(video), p, _Recorder(), workers=2)


def _frame_count(path: Path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def _write_annotated(out: Path, n: int = 7, **kw) -> tuple[ResultWriter, list[str]]:
    notes = []
    sink = ResultWriter(out, np.asarray(PALETTE, np.uint8), video=True, fps=10, note=notes.append, **kw)
    for i in range(n):
        sink.write(Frame(rand_img(48, 64, i), f"f{i}", i), np.full((48, 64), i % 3, np.uint8), "clip")
    sink.close()
    return sink, notes


def test_video_segments_are_partial_until_closed_then_play(tmp_path):
    out = tmp_path / "out"
    sink = ResultWriter(out, np.asarray(PALETTE, np.uint8), video=True, fps=10, segment_frames=3, masks=True,
                        raw_ids=True, overlays=True, note=lambda m: None)
    for i in range(7):
        sink.write(Frame(rand_img(48, 64, i), f"f{i}", i), np.full((48, 64), i % 3, np.uint8), "clip")
        if i == 3:  # the second segment is open: under its partial name only
            assert sorted(p.name for p in out.glob("*.mp4")) == ["clip_000.mp4", "clip_001.partial.mp4"]
    sink.close()
    assert [p.name for p in sink.video_paths] == ["clip_000.mp4", "clip_001.mp4", "clip_002.mp4"]
    assert [_frame_count(p) for p in sink.video_paths] == [3, 3, 1]
    assert sorted(p.name for p in out.glob("*.mp4")) == [p.name for p in sink.video_paths]
    masks = sorted((out / "masks").iterdir())  # written through a rename: no temporary left behind
    assert [p.name for p in masks] == [f"f{i}.png" for i in range(7)] and len(list((out / "overlays").iterdir())) == 7
    np.testing.assert_array_equal(cv2.imread(str(masks[4]), cv2.IMREAD_UNCHANGED), np.full((48, 64), 1, np.uint8))


def test_video_is_h264_where_opencv_can_else_mp4v_with_a_note(tmp_path):
    sink, notes = _write_annotated(tmp_path / "out")
    assert sink.video_codec in (*sinks.H264_FOURCCS, sinks.FALLBACK_FOURCC)
    assert _frame_count(sink.video_path) == 7  # a readable file, every frame
    if sink.video_codec == sinks.FALLBACK_FOURCC:  # this OpenCV cannot encode H.264: said once, with the way out
        assert len(notes) == 1 and "mp4v" in notes[0] and "ffmpeg -i" in notes[0] and "\n" not in notes[0]
    else:
        assert notes == []


def test_video_falls_back_to_mp4v_when_no_h264_encoder_opens(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks, "H264_FOURCCS", ("zzzz",))  # an encoder no OpenCV has
    sink, notes = _write_annotated(tmp_path / "out")
    assert sink.video_codec == "mp4v" and _frame_count(sink.video_path) == 7
    assert len(notes) == 1 and "not playable in most browsers" in notes[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4"]


def test_infer_cli_converts_gray_rgba_and_16bit_images(model, tmp_path):
    """Each odd file gives the labels of its 8-bit RGB equivalent; one note per kind, not per image."""
    from click.testing import CliRunner

    from igldt.cli.main import cli
    rgb = rand_img(24, 40, 7)  # RGB; files are written BGR
    gray = rgb[..., 0]
    files = {"ref": rgb[..., ::-1], "gray_ref": np.dstack([gray] * 3), "gray1": gray, "gray2": gray[::-1],
             "rgba": np.dstack([rgb[..., ::-1], np.full(gray.shape, 9, np.uint8)]),
             "deep": rgb[..., ::-1].astype(np.uint16) * 257}
    src = tmp_path / "in"
    src.mkdir()
    for name, img in files.items():
        assert cv2.imwrite(str(src / f"{name}.png"), img)
    res = CliRunner().invoke(cli, ["infer", str(src), "--model", str(model), "--device", "cpu",
                                   "--out", str(tmp_path / "run"), "--save-masks", "--raw-ids"])
    assert res.exit_code == 0, res.output
    assert res.output.count("note: ") == 3, res.output  # gray1 and gray2: one grayscale note
    for kind in ("grayscale images", "RGBA images", "16-bit images"):
        assert res.output.count(kind) == 1, res.output
    masks = {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / "run" / "masks").glob("*.png")}
    assert len(masks) == len(files)
    np.testing.assert_array_equal(masks["rgba"], masks["ref"])
    np.testing.assert_array_equal(masks["deep"], masks["ref"])
    np.testing.assert_array_equal(masks["gray1"], masks["gray_ref"])
    bad = tmp_path / "float.tiff"
    cv2.imwrite(str(bad), np.zeros((8, 8, 3), np.float32))
    res = CliRunner().invoke(cli, ["infer", str(bad), "--model", str(model), "--device", "cpu",
                                   "--out", str(tmp_path / "run2")])
    assert res.exit_code != 0 and "float.tiff" in res.output and "float32" in res.output


BLOCK_TORCH = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, _Block())
""")


def test_runtime_and_infer_cli_without_torch(model, tmp_path):
    """igldt.runtime and `igldt infer` with torch made unimportable: the edge-box situation."""
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), rand_img(40, 56))
    code = BLOCK_TORCH + textwrap.dedent(f"""
        import numpy as np, igldt.runtime
        from igldt.runtime import Predictor
        out = Predictor({str(model)!r}, device="cpu").predict([np.zeros((40, 56, 3), np.uint8)])
        assert out[0].shape == (40, 56)
        from igldt.cli.main import cli
        try:
            cli.main(["infer", {str(img)!r}, "--model", {str(model)!r}, "--device", "cpu",
                      "--out", {str(tmp_path / "run")!r}, "--save-masks"], standalone_mode=False)
        finally:
            assert "torch" not in sys.modules, "torch was imported"
        print("TORCH-FREE OK")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "TORCH-FREE OK" in r.stdout, r.stderr[-2000:]
    assert (tmp_path / "run" / "masks" / "img.png").exists()


def labelled_folder(data: Path, n: int) -> Path:
    """A folder-format val split of `n` random images whose masks are the tiny model's own answer."""
    from igldt.data import write_classes_yaml

    for sub in ("images/val", "masks/val"):
        (data / sub).mkdir(parents=True)
    write_classes_yaml(data / "classes.yaml", CLASSES, np.asarray(PALETTE, np.uint8))
    for i in range(n):
        img = rand_img(24, 32, i)
        cv2.imwrite(str(data / "images" / "val" / f"v{i}.png"), img[..., ::-1])
        cv2.imwrite(str(data / "masks" / "val" / f"v{i}.png"), expected_logits(img).argmax(0).astype(np.uint8))
    return data


def test_evaluate_engine_without_torch_writes_report_and_figures(model, tmp_path):
    """`igldt evaluate --engine` on an edge install: JSON, confusion matrix and samples, no torch."""
    data = labelled_folder(tmp_path / "data", 6)
    out = tmp_path / "eval.json"
    code = BLOCK_TORCH + textwrap.dedent(f"""
        from igldt.cli.main import cli
        try:
            cli.main(["evaluate", "--engine", {str(model)!r}, "--data", {str(data)!r}, "--dataset", "folder",
                      "--split", "val", "--device", "cpu", "--out", {str(out)!r}, "--samples", "3"],
                     standalone_mode=False)
        finally:
            assert "torch" not in sys.modules, "torch was imported"
        print("TORCH-FREE OK")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "TORCH-FREE OK" in r.stdout, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert np.asarray(report["engine"]["confusion"]).sum() == 6 * 24 * 32
    assert report["engine"]["miou"] > 0.9  # masks are the model's own answer, up to float ties
    confusion = cv2.imread(str(tmp_path / "eval.confusion.png"))
    samples = cv2.imread(str(tmp_path / "eval.samples.png"))
    assert confusion is not None and samples is not None
    assert samples.shape[0] > 3 * 24 * 320 // 32  # three rows of 320-wide tiles


def test_infer_cli_numbered_runs_and_errors(model, tmp_path):
    from click.testing import CliRunner

    from igldt.cli.main import cli
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"f{i}.jpg"), rand_img(32, 48, i))
    video = _write_video(tmp_path / "clip.mp4")
    run = CliRunner()
    base = ["--model", str(model), "--device", "cpu", "--out", str(tmp_path / "runs" / "exp")]
    r1 = run.invoke(cli, ["infer", str(tmp_path / "f*.jpg"), *base, "--save-overlay"])
    assert r1.exit_code == 0, r1.output
    r2 = run.invoke(cli, ["infer", str(video), *base, "--save-video", "--vid-stride", "2", "--workers", "2"])
    assert r2.exit_code == 0, r2.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp", "exp2"]  # nothing overwritten
    assert len(list((tmp_path / "runs" / "exp" / "overlays").glob("*.jpg"))) == 2
    cap = cv2.VideoCapture(str(tmp_path / "runs" / "exp2" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and abs(cap.get(cv2.CAP_PROP_FPS) - 5) < 0.5
    assert f"video {tmp_path / 'runs' / 'exp2' / 'clip.mp4'}: " in r2.output  # and its codec
    assert "H.264" in r2.output or "mp4v" in r2.output
    bad = run.invoke(cli, ["infer", str(tmp_path / "f0.jpg"), "--model", str(tmp_path / "none.onnx")])
    assert bad.exit_code != 0 and "none.onnx not found" in bad.output and len(bad.output.strip().splitlines()) == 1
    cam = run.invoke(cli, ["infer", "99", *base])
    assert cam.exit_code != 0 and "camera 99" in cam.output
    none = run.invoke(cli, ["infer", str(video), *base, "--workers", "0"])
    assert none.exit_code != 0 and "--workers" in none.output


def test_imgsz_resizes_for_the_network_and_returns_source_size(model):
    """imgsz: the network sees the resized image; labels and logits come back at the source size, equal to
    doing the resize, the network and the inverse resize by hand."""
    from igldt.runtime.preprocess import resize_image, resize_result

    img = rand_img(40, 56, seed=3)
    for imgsz, net in ((28, (20, 28)), ((24, 32), (24, 32)), (100, (40, 56))):
        p = Predictor(model, device="cpu", imgsz=imgsz)
        assert p.network_size(40, 56) == net
        small = resize_image(img, net)
        want = resize_result(expected_logits(small), (40, 56))
        got = p.predict_logits([img])[0]
        assert got.shape == (3, 40, 56) and np.abs(got - want).max() < 1e-4
        labels = p.predict([img])[0]
        assert labels.shape == (40, 56)
        # labels: the network's labels at its size, scaled back by nearest neighbour
        assert (labels == resize_result(p.predict([small])[0], (40, 56))).all()
    with pytest.raises(DeployError, match="imgsz"):
        Predictor(model, device="cpu", imgsz=(0, 32))


def test_imgsz_auto_is_the_export_size_and_static_engines_resize(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    m = onnx.load(str(path))
    meta = json.loads(m.metadata_props[0].value)
    meta["input"]["imgsz"] = [24, 32]
    m.metadata_props[0].value = json.dumps(meta)
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim[2:], (24, 32)):
        d.dim_value = v  # a static graph: one input size
    onnx.save(m, str(path))
    auto = Predictor(path, device="cpu", imgsz="auto")
    assert auto.imgsz == (24, 32)  # static: the engine's size wins over "longest side 32"
    assert auto.predict([rand_img(60, 80)])[0].shape == (60, 80)  # was an error: larger than the static size
    assert "network size 24x32" in auto.describe()


def test_infer_cli_imgsz(model, tmp_path):
    from click.testing import CliRunner

    from igldt.cli.main import cli
    img = tmp_path / "big.png"
    cv2.imwrite(str(img), rand_img(64, 96))
    run = CliRunner()
    r = run.invoke(cli, ["infer", str(img), "--model", str(model), "--device", "cpu", "--imgsz", "32x48",
                         "--out", str(tmp_path / "a"), "--save-masks"])
    assert r.exit_code == 0, r.output
    assert "network size 32x48" in r.output
    assert cv2.imread(str(tmp_path / "a" / "masks" / "big.png"), cv2.IMREAD_UNCHANGED).shape[:2] == (64, 96)
    bad = run.invoke(cli, ["infer", str(img), "--model", str(model), "--imgsz", "big"])
    assert bad.exit_code != 0 and "--imgsz" in bad.output


def test_benchmark_prints_miou_and_latency_of_an_engine(model, tmp_path):
    """`igldt benchmark` scores the engine with the evaluation loop (masks = the model's own answer)
    and times it on the same real images; --json keeps the rows."""
    from click.testing import CliRunner

    from igldt.cli.main import cli

    data = labelled_folder(tmp_path / "data", 3)
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(cli, ["benchmark", str(model), "--data", str(data), "--dataset", "folder", "--split", "val",
                                   "--runs", "2", "--warmup", "1", "--device", "cpu", "--json", str(out)])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())
    assert row["status"] == "ok" and row["miou"] > 0.9 and row["p50_ms"] > 0


def test_video_sink_draws_on_the_decoded_bgr_frame_as_on_the_rgb_one(tmp_path):
    """Video and stream frames carry their decoded BGR array, which the sink blends without converting
    back; the result is the RGB path's, converted."""
    rgb, labels = rand_img(48, 64, 3), np.random.default_rng(1).integers(0, 3, (48, 64), dtype=np.uint8)
    drawn = {}
    for name, frame in (("rgb", Frame(rgb, "a", 0)), ("bgr", Frame(rgb, "b", 0, bgr=cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))):
        sink = ResultWriter(tmp_path / name, np.asarray(PALETTE, np.uint8), overlays=True)
        sink.write(frame, labels)
        drawn[name] = cv2.imread(str(tmp_path / name / "overlays" / f"{frame.name}.jpg"))
    assert np.abs(drawn["rgb"].astype(int) - drawn["bgr"]).max() <= 1
    assert sinks.overlay(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), labels, np.asarray(PALETTE, np.uint8)[:, ::-1]).tolist() \
        == cv2.cvtColor(sinks.overlay(rgb, labels, np.asarray(PALETTE, np.uint8)), cv2.COLOR_RGB2BGR).tolist()
