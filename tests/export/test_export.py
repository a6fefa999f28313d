"""Export of a tiny trained student: ONNX fp32 / INT8 / labels+baked, parity, CLI safety, TensorRT."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

from igldt.cli.main import cli  # noqa: E402
from igldt.config import load_config  # noqa: E402
from igldt.export.onnx import ExportError, opset_of  # noqa: E402
from igldt.export.parity import compare  # noqa: E402
from igldt.export.pipeline import run_export  # noqa: E402
from igldt.runtime import Predictor  # noqa: E402
from igldt.runtime.metadata import read_sidecar, sidecar_path  # noqa: E402


def train_student(root, demo, backbone: str = "resnet18", steps: int = 25, mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), **arch) -> dict:
    """A DeepLabV3+ student trained for a few SGD steps on the demo data at `demo` (mIoU well above
    chance), saved as an export-ready checkpoint in `root`."""
    from igldt.checkpoint import save_checkpoint, student_payload
    from igldt.data import build_dataset
    from igldt.models import build_segmenter

    train, val = build_dataset("demo", demo, "train"), build_dataset("demo", demo, "val")
    torch.manual_seed(0)
    model = build_segmenter(backbone, len(train.classes), 16, **arch)
    mean, std = np.float32(mean), np.float32(std)
    xs = np.stack([((train.load_image(i) / np.float32(255) - mean) / std).transpose(2, 0, 1) for i in range(len(train))])
    ys = np.stack([train.load_mask(i) for i in range(len(train))]).astype(np.int64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.choice(len(xs), 8, replace=False)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(xs[idx]))["logits"],
                                                 torch.from_numpy(ys[idx]), ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    cfg = load_config(None, data={"dataset": "demo", "root": str(demo), "train_split": "train", "val_split": "val",
                                  "crop": [96, 128], "fraction": 0.25, "count": None, "split_seed": 0,
                                  "labelled_list": None, "unlabelled_list": None})
    meta = {"classes": train.classes, "palette": train.palette, "mean": mean.tolist(), "std": std.tolist()}
    ckpt = save_checkpoint(root / "student.pt", student_payload(model, None, meta, cfg))
    return {"root": root, "ckpt": ckpt, "val": val, "demo": demo}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data):
    return train_student(tmp_path_factory.mktemp("exp"), demo_data)


@pytest.fixture(scope="module")
def fp32(trained):
    return run_export(trained["ckpt"], "onnx", "fp32", out=trained["root"] / "student.onnx", check_count=4)


@pytest.fixture(scope="module")
def reference(trained):
    return Predictor(trained["ckpt"], device="cpu")


def test_fp32_onnx_matches_pytorch(trained, fp32, reference):
    model = onnx.load(str(fp32.path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    props = {p.key: p.value for p in model.metadata_props}
    side = read_sidecar(fp32.path)
    assert sidecar_path(fp32.path).name == "student.onnx.json" and "igldt" in props
    assert side["classes"] == trained["val"].classes and side["stride"] == 16
    assert len(side["source"]["sha256"]) == 64 and side["versions"]["torch"] and side["input"]["layout"] == "NCHW"
    # the export's own check ran on real (demo val) images
    assert fp32.check["pixel_agreement"] > 0.999 and fp32.check["max_abs_logit_diff"] < 1e-3
    r = compare(Predictor(fp32.path, device="cpu"), reference, trained["val"])
    print(f"\nfp32 parity: ref mIoU {100 * r['reference']['miou']:.2f}, onnx {100 * r['engine']['miou']:.2f}, "
          f"agreement {r['pixel_agreement']:.5f}, max diff {r['max_abs_logit_diff']:.2e}")
    assert r["reference"]["miou"] > 0.3, "the tiny student did not learn; the parity check would be vacuous"
    assert abs(r["delta_miou_points"]) <= 0.05 and r["passed"]
    assert r["pixel_agreement"] > 0.999 and r["max_abs_logit_diff"] < 1e-3
    # batches of several images and a size that needs padding give the same labels as one at a time
    p = Predictor(fp32.path, device="cpu", batch=3)
    imgs = [trained["val"].load_image(i)[:90, :120] for i in range(3)]
    batched, single = p.predict(imgs), [p.predict([im])[0] for im in imgs]
    assert all((a == b).mean() > 0.999 for a, b in zip(batched, single))
    # a .pt and its .onnx pad alike (to the network's stride, 16 here) at sizes that are not
    # multiples of 32, so they give the same logits, not just close mIoU
    assert reference.stride == p.stride == 16
    for h, w in ((90, 120), (72, 100)):
        im = trained["val"].load_image(0)[:h, :w]
        a, b = reference.predict_logits([im])[0], Predictor(fp32.path, device="cpu").predict_logits([im])[0]
        assert a.shape == b.shape == (len(trained["val"].classes), h, w)
        assert np.abs(a - b).max() < 1e-3


def _zero_points(model) -> list[np.ndarray]:
    inits = {i.name: i for i in model.graph.initializer}
    return [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]


def test_int8_qdq_end_to_end_on_cpu(trained, reference, tmp_path):
    """--format onnx: the graph ORT runs with integer kernels (uint8 activations, every op quantised, each
    DQ -> Conv -> Q fused into QLinearConv), close to fp32 on real images."""
    import onnxruntime as ort

    r = run_export(trained["ckpt"], "onnx", "int8", out=trained["root"] / "student_int8.onnx",
                   calib_count=16, check_count=0)
    model = onnx.load(str(r.path))
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] > 10 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    activations = [z for z in _zero_points(model) if z.ndim == 0]
    assert activations and all(z.dtype == np.uint8 for z in activations)  # U8S8: what ORT's x86 kernels want
    assert r.meta["precision"] == "int8" and "unlabelled" in r.meta["calibration"]["source"]
    assert r.meta["calibration"]["target"] == "ort"
    assert r.path.stat().st_size < 0.4 * (trained["root"] / "student.pt").stat().st_size
    # what ORT makes of it: integer convolutions, not float ones fed by dequantised weights
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(r.path), so, providers=["CPUExecutionProvider"])
    fused = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert fused["QLinearConv"] >= 0.9 * ops["Conv"] and fused["Conv"] + fused["FusedConv"] <= 0.1 * ops["Conv"], fused
    res = compare(Predictor(r.path, device="cpu"), reference, trained["val"])
    print(f"\nint8 parity: ref mIoU {100 * res['reference']['miou']:.2f}, int8 {100 * res['engine']['miou']:.2f}, "
          f"delta {res['delta_miou_points']:+.2f} points, agreement {res['pixel_agreement']:.4f}")
    assert res["pixel_agreement"] > 0.9 and res["delta_miou_points"] > -5.0


def _tensor_types(model) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}


def test_int8_for_tensorrt_is_symmetric(trained, reference):
    """--int8-target tensorrt (the default of --format trt): zero points all 0 in int8, as TensorRT's
    explicit quantisation requires, residual Adds quantised too."""
    r = run_export(trained["ckpt"], "onnx", "int8", out=trained["root"] / "student_int8_trt.onnx",
                   calib_count=8, check_count=0, int8_target="tensorrt")
    model = onnx.load(str(r.path))
    zero_points = _zero_points(model)
    assert zero_points and all((z == 0).all() and z.dtype == np.int8 for z in zero_points)
    quantised_inputs = {i for n in model.graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add" and any(i in quantised_inputs for i in n.input)]
    assert adds, "no Add has a quantised input"
    assert r.meta["calibration"]["target"] == "tensorrt" and r.meta["calibration"]["float_layers"] == "fp16"
    # strongly typed TensorRT runs each layer at its ONNX type: fp16 scales (opset 19), fp16 convolutions
    assert r.meta["opset"] == opset_of(model) >= 19
    inits = {i.name: i.data_type for i in model.graph.initializer}
    scales = [inits[n.input[1]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert scales and set(scales) == {onnx.TensorProto.FLOAT16}
    types = _tensor_types(model)
    assert {types[n.output[0]] for n in model.graph.node if n.op_type == "Conv"} == {onnx.TensorProto.FLOAT16}
    res = compare(Predictor(r.path, device="cpu"), reference, trained["val"])
    assert res["pixel_agreement"] > 0.9


def test_labels_output_and_baked_preprocess_match_plain(trained, fp32):
    r = run_export(trained["ckpt"], "onnx", "fp32", out=trained["root"] / "edge.onnx", output="labels",
                   bake_preprocess=True, check_count=0)
    model = onnx.load(str(r.path))
    inp, out = model.graph.input[0].type.tensor_type, model.graph.output[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.UINT8 and inp.shape.dim[3].dim_value == 3  # NHWC uint8
    assert out.elem_type == onnx.TensorProto.UINT8 and len(out.shape.dim) == 3
    edge, plain = Predictor(r.path, device="cpu"), Predictor(fp32.path, device="cpu")
    assert edge.baked and edge.output_kind == "labels"
    with pytest.raises(Exception, match="outputs labels"):
        edge.predict_logits([trained["val"].load_image(0)])
    imgs = [trained["val"].load_image(i) for i in range(6)]
    agree = [(a == b).mean() for a, b in zip(edge.predict(imgs), plain.predict(imgs))]
    assert min(agree) > 0.999


def test_baked_int8_keeps_its_preprocessing_float(trained):
    """The uint8 -> normalised steps of a --bake-preprocess graph get no Q/DQ (as QLinearMul/QLinearAdd
    they cost a third of the INT8 network); the first convolution's input is still quantised."""
    r = run_export(trained["ckpt"], "onnx", "int8", out=trained["root"] / "edge_int8.onnx", output="labels",
                   bake_preprocess=True, calib_count=8, check_count=0)
    graph = onnx.load(str(r.path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    mul_add = [n for n in graph.node if n.op_type in ("Mul", "Add") and graph.input[0].name in _ancestors(n, producer)
               and not any(producer.get(i) is not None and producer[i].op_type == "Conv" for i in _ancestors(n, producer))]
    assert mul_add and all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
                           for n in mul_add for i in n.input)
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    assert producer[first_conv.input[0]].op_type == "DequantizeLinear"


def _ancestors(node, producer) -> set[str]:
    """Every tensor name `node` depends on."""
    seen, todo = set(), list(node.input)
    while todo:
        name = todo.pop()
        if name and name not in seen:
            seen.add(name)
            if name in producer:
                todo.extend(producer[name].input)
    return seen


def test_existing_output_needs_force_and_bad_imgsz(trained, fp32):
    before = fp32.path.read_bytes()
    run = CliRunner()
    r = run.invoke(cli, ["export", "--weights", str(trained["ckpt"]), "--out", str(fp32.path)])
    assert r.exit_code != 0 and "--force" in r.output and len(r.output.strip().splitlines()) == 1
    assert fp32.path.read_bytes() == before
    r = run.invoke(cli, ["export", "--weights", str(trained["ckpt"]), "--imgsz", "100", "128",
                         "--out", str(trained["root"] / "odd.onnx")])
    assert r.exit_code != 0 and "--imgsz 100 128" in r.output and "112 128" in r.output
    assert not (trained["root"] / "odd.onnx").exists()


def test_failed_export_leaves_nothing(trained, tmp_path):
    empty = tmp_path / "calib"
    empty.mkdir()
    out = tmp_path / "s_int8.onnx"
    with pytest.raises(ExportError, match="--calib"):
        run_export(trained["ckpt"], "onnx", "int8", calib=empty, out=out, check_count=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib"]  # no artefact, sidecar or temp left


def test_evaluate_parity_cli(trained, fp32, tmp_path):
    run = CliRunner()
    ok = run.invoke(cli, ["evaluate", "--engine", str(fp32.path), "--reference", str(trained["ckpt"]),
                          "--out", str(tmp_path / "parity.json")])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output and "pixel agreement" in ok.output and (tmp_path / "parity.json").exists()
    # an untrained model scored against the trained one drops far past the fp32 tolerance -> exit 1
    from igldt.checkpoint import save_checkpoint, student_payload
    from igldt.models import build_segmenter
    torch.manual_seed(1)
    raw = build_segmenter("resnet18", len(trained["val"].classes), 16)
    recorded = load_config(None, data={"dataset": "demo", "root": str(trained["demo"])})
    bad = save_checkpoint(tmp_path / "untrained.pt",
                          student_payload(raw, None, {"classes": trained["val"].classes}, recorded))
    fail = run.invoke(cli, ["evaluate", "--engine", str(bad), "--reference", str(trained["ckpt"]),
                            "--out", str(tmp_path / "fail.json")])
    assert fail.exit_code == 1 and "FAIL" in fail.output


def test_tensorrt_engine(trained, fp32):
    from igldt.export.tensorrt import tensorrt_status
    ok, reason = tensorrt_status()
    if not ok:
        pytest.skip(reason)
    r = run_export(trained["ckpt"], "trt", "fp16", out=trained["root"] / "student.plan", check_count=4)
    assert r.path.read_bytes()[:4] != b"{\"fo"  # nothing prepended: raw TensorRT bytes
    assert r.meta["tensorrt"]["compute_capability"] and r.check["pixel_agreement"] > 0.99
    res = compare(Predictor(r.path), Predictor(fp32.path, device="cpu"), trained["val"])
    assert res["passed"]


def test_trt_export_without_tensorrt_is_one_line(trained):
    from igldt.export.tensorrt import tensorrt_status
    if tensorrt_status()[0]:
        pytest.skip("TensorRT is available here")
    r = CliRunner().invoke(cli, ["export", "--weights", str(trained["ckpt"]), "--format", "trt",
                                 "--out", str(trained["root"] / "x.plan")])
    assert r.exit_code != 0 and "TensorRT" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (trained["root"] / "x.plan").exists()


def test_int8_cli_reads_a_relative_calib_folder(trained, tmp_path, monkeypatch):
    """`--calib images` and `--out` relative to where the user stands: the quantiser works in a temporary
    folder, so both are resolved first (they used to fail with 'image images/x.png does not exist' and
    'No such file or directory: .../igldt-int8-*/out/...')."""
    import shutil

    work = tmp_path / "work"
    (work / "images").mkdir(parents=True)
    for p in sorted((trained["demo"] / "images" / "train").glob("*.png"))[:4]:
        shutil.copy(p, work / "images" / p.name)
    monkeypatch.chdir(work)
    (work / "out").mkdir()
    r = CliRunner().invoke(cli, ["export", "--weights", str(trained["ckpt"]), "--format", "onnx", "--precision", "int8",
                                 "--calib", "images", "--calib-count", "4", "--out", "out/relative_int8.onnx",
                                 "--check-images", "0"])
    assert r.exit_code == 0, r.output
    out = work / "out" / "relative_int8.onnx"
    assert out.is_file() and not list((work / "out").glob("igldt-int8-*"))
    assert read_sidecar(out)["calibration"]["calibration_images"] == 4
    assert str(work / "images") in read_sidecar(out)["calibration"]["source"]


def test_static_int8_calibrates_at_its_own_size(trained, tmp_path):
    """A static graph exported at a smaller --imgsz than the training images (the edge path: frames
    resized to the engine's size) calibrates on images resized to that size, as the runtime feeds it
    (the calibration used to feed them at their own size, which a static graph refuses)."""
    out = tmp_path / "small_int8.onnx"
    r = CliRunner().invoke(cli, ["export", "--weights", str(trained["ckpt"]), "--format", "onnx", "--precision", "int8",
                                 "--imgsz", "64", "96", "--static", "--calib", str(trained["demo"] / "images" / "train"),
                                 "--calib-count", "4", "--out", str(out), "--check-images", "0"])
    assert r.exit_code == 0, r.output
    p = Predictor(out)
    frame = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    assert p.predict([frame])[0].shape == (90, 130)  # run at 64x96, returned at the frame's size


@pytest.fixture(scope="module")
def lite(tmp_path_factory, demo_data):
    """The edge student's kind of network: EfficientNet-Lite (ReLU6, depthwise convolutions, TF 'same'
    padding computed from the input size) with the separable head."""
    return train_student(tmp_path_factory.mktemp("lite"), demo_data, "tf_efficientnet_lite0", steps=30,
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), head="separable")


def _padding_arithmetic(model) -> list[str]:
    """The graph's nodes that compute a padding or any other arithmetic on shapes (what timm's TF 'same'
    padding put there before the exporter saw fixed pads): shape nodes other than gathers and concats of
    sizes, and every Pad node."""
    from igldt.export.onnx import shape_nodes

    names = set(shape_nodes(model.graph))
    return [f"{n.op_type} {n.name}" for n in model.graph.node
            if n.op_type == "Pad" or n.name in names and n.op_type not in ("Concat", "Gather", "Slice", "Unsqueeze")]


@pytest.fixture(scope="module")
def lite_fp32(lite):
    return run_export(lite["ckpt"], "onnx", "fp32", out=lite["root"] / "lite.onnx", check_count=4)


@pytest.mark.slow
def test_dynamic_lite_export_has_fixed_pads_and_matches_pytorch_at_three_sizes(lite, lite_fp32):
    """The edge student's network exported dynamic: no padding arithmetic left in the graph (its
    'same' pads are constants for inputs of stride * k), and the PyTorch model's logits at the export
    size and at two other multiples of the stride."""
    model = onnx.load(str(lite_fp32.path))
    assert not _padding_arithmetic(model), _padding_arithmetic(model)
    assert Counter(n.op_type for n in model.graph.node)["Shape"] <= 10  # a few sizes for the Resizes, none per layer
    assert lite_fp32.check["pixel_agreement"] > 0.999 and lite_fp32.check["max_abs_logit_diff"] < 1e-3
    import cv2

    ref, got = Predictor(lite["ckpt"], device="cpu"), Predictor(lite_fp32.path, device="cpu")
    assert got.stride == ref.stride == 16
    for h, w in ((96, 128), (64, 160), (144, 96)):
        im = cv2.resize(lite["val"].load_image(0), (w, h), interpolation=cv2.INTER_AREA)
        a, b = ref.predict_logits([im])[0], got.predict_logits([im])[0]
        assert a.shape == b.shape == (len(lite["val"].classes), h, w)
        assert np.abs(a - b).max() < 1e-3 and (a.argmax(0) == b.argmax(0)).mean() > 0.999, (h, w)


@pytest.mark.slow
def test_static_lite_export_has_no_shape_computation(lite):
    r = run_export(lite["ckpt"], "onnx", "fp32", out=lite["root"] / "lite_static.onnx", dynamic=False, check_count=2)
    model = onnx.load(str(r.path))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 96, 128]
    assert not [n for n in model.graph.node if n.op_type in ("Shape", "Pad")]
    assert r.check["pixel_agreement"] > 0.999 and r.check["max_abs_logit_diff"] < 1e-3


@pytest.mark.slow
def test_fp16_lite_student(lite):
    """--precision fp16 of the edge student: fp16 convolutions, float32 IO, no padding arithmetic (so
    nothing for fp16's 2048 integer limit to break), and the PyTorch model's labels at sizes that are not
    multiples of the stride (padded by the runtime)."""
    import cv2

    r = run_export(lite["ckpt"], "onnx", "fp16", out=lite["root"] / "lite_fp16.onnx", check_count=0)
    model = onnx.load(str(r.path))
    types = _tensor_types(model)
    assert not _padding_arithmetic(model)
    assert {types[n.output[0]] for n in model.graph.node if n.op_type == "Conv"} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    half, full = Predictor(r.path, device="cpu"), Predictor(lite["ckpt"], device="cpu")  # PyTorch fp32
    for h, w in [(100, 150), (77, 130)]:
        img = cv2.resize(lite["val"].load_image(0), (w, h), interpolation=cv2.INTER_AREA)
        a, b = half.predict([img])[0], full.predict([img])[0]
        assert a.shape == (h, w) and (a == b).mean() > 0.99


@pytest.mark.slow
def test_int8_of_a_lite_student_passes_its_tolerance_gate(lite):
    """The edge student's kind of network: its INT8 ONNX passes `igldt evaluate --engine ... --reference
    ...` at the INT8 tolerance."""
    out = lite["root"] / "lite_int8.onnx"
    run_export(lite["ckpt"], "onnx", "int8", out=out, calib_count=16, check_count=0)
    r = CliRunner().invoke(cli, ["evaluate", "--engine", str(out), "--reference", str(lite["ckpt"]),
                                 "--data", str(lite["demo"]), "--dataset", "demo", "--split", "val", "--device", "cpu",
                                 "--out", str(lite["root"] / "parity.json")])
    assert r.exit_code == 0 and "PASS" in r.output, r.output
