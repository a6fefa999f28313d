"""Accuracy-aware INT8 (`--tolerance`): the loop on fakes, then on a tiny student with one layer made
deliberately sensitive to INT8: that layer is the one left in float, and the sidecar says so."""
import numpy as np
import onnx
import pytest
import torch

from igldt.export.accuracy import fit_tolerance, rank_layers
from igldt.export.onnx import ExportError
from igldt.export.pipeline import run_export
from igldt.runtime import Predictor
from igldt.runtime.metadata import read_sidecar

from .test_export import train_student


def fake(sensitive: dict[str, float], fp32=0.50):
    """quantize(exclude) -> the set left in float; score -> fp32 minus the cost of every quantised layer."""
    def quantize(exclude):
        return frozenset(exclude)

    def score(left):
        return fp32 - sum(cost for name, cost in sensitive.items() if name not in left)
    return quantize, score


def test_the_loop_reverts_the_costliest_layers_first_and_stops_within_tolerance():
    layers = [f"conv{i}" for i in range(8)]
    quantize, score = fake({"conv5": 0.030, "conv2": 0.008, "conv7": 0.004})
    assert [n for n, _ in rank_layers(quantize, score, layers, score(quantize([])))[:3]] == ["conv5", "conv2", "conv7"]
    proto, fit = fit_tolerance(quantize, score, score, layers, 0.50, tolerance=1.0, max_float=0.5, echo=lambda s: None)
    # all-INT8: -4.2 points; conv5 in float: -1.2; conv5 + conv2: -0.4, within 1.0
    assert fit.left_in_float == ["conv5", "conv2"] and proto == {"conv5", "conv2"}
    assert fit.delta_points == pytest.approx(-0.4) and [k for k, _ in fit.steps] == [0, 1, 2]
    proto, fit = fit_tolerance(quantize, score, score, layers, 0.50, tolerance=5.0, echo=lambda s: None)
    assert fit.left_in_float == [] and not fit.ranking  # already within: nothing ranked, nothing in float


def test_a_tolerance_that_cannot_be_met_names_the_best_drop_reached():
    layers = [f"conv{i}" for i in range(8)]
    quantize, score = fake({f"conv{i}": 0.01 for i in range(8)})
    with pytest.raises(ExportError, match=r"stays 6\.00 mIoU points below fp32 at best \(2 of 8 layers in float"):
        fit_tolerance(quantize, score, score, layers, 0.50, tolerance=1.0, max_float=0.25, echo=lambda s: None)


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory, demo_data):
    """A tiny trained student whose classifier is made fragile under per-channel int8 weights and unchanged
    in float: one decoder channel is forced to exactly 0 (its conv and BatchNorm scale zeroed, its shift
    negative, then ReLU), and the most frequent class's classifier weight on that channel set 1000x larger
    than the rest, so its quantisation scale rounds every other weight of that class to 0."""
    s = train_student(tmp_path_factory.mktemp("acc"), demo_data)
    ckpt = torch.load(s["ckpt"], weights_only=False)
    sd = ckpt["state_dict"]
    conv = next(k for k in sd if k.startswith("decoder.fuse.1.") and k.endswith("weight") and sd[k].ndim == 4)
    bn = conv.rsplit(".", 2)[0]
    bn_keys = [k for k in sd if k.startswith(bn) and k.endswith(".running_mean")]
    prefix = bn_keys[0][: -len("running_mean")]
    sd[conv][0] = 0
    sd[prefix + "weight"][0], sd[prefix + "bias"][0] = 0.0, -1.0
    ref = Predictor(s["ckpt"], device="cpu")
    counts = np.bincount(np.concatenate([ref.predict([s["val"].load_image(i)])[0].ravel() for i in range(4)]),
                         minlength=len(s["val"].classes))
    c = int(counts.argmax())
    w = sd["classifier.weight"]
    w[c, 0] = 1000 * w.abs().max()
    torch.save(ckpt, s["ckpt"])
    return s


@pytest.mark.slow
def test_the_sensitive_layer_is_left_in_float_and_recorded(sensitive, tmp_path):
    lines = []
    fitted = run_export(sensitive["ckpt"], "onnx", "int8", out=tmp_path / "fit.onnx", calib_count=8, check_count=0,
                        tolerance=1.0, echo=lines.append)
    side = read_sidecar(fitted.path)["calibration"]
    acc = side["accuracy"]
    assert acc["int8_miou_all_layers"] < acc["fp32_miou"] - 0.01, "the fragile classifier did not hurt INT8"
    assert len(acc["left_in_float"]) == 1 and abs(acc["delta_miou_points"]) <= 1.0
    assert side["left_in_float"] == acc["left_in_float"] and acc["latency_ms"]["all_int8"] > 0
    assert side["left_in_float_layers"] == ["classifier"] and acc["ranking"][0]["layer"] == "classifier"
    # the node left in float is the classifier: the only Conv with one output channel per class, its
    # weight a float initializer in the saved graph (no DequantizeLinear in front of it)
    graph = onnx.load(str(fitted.path)).graph
    inits = {i.name: i for i in graph.initializer}
    node = next(n for n in graph.node if n.name == acc["left_in_float"][0])
    assert node.op_type == "Conv" and node.input[1] in inits
    assert inits[node.input[1]].dims[0] == len(sensitive["val"].classes)
    assert any("Left in float" in line for line in lines)
    from igldt.export.parity import engine_miou
    # the saved artefact is the fitted graph: its mIoU through the runtime is the one the loop measured
    assert engine_miou(Predictor(fitted.path, device="cpu"), sensitive["val"]) == pytest.approx(acc["final_miou"])


def test_tolerance_bad_arguments_one_line(sensitive, tmp_path):
    with pytest.raises(ExportError, match="--tolerance applies to --precision int8"):
        run_export(sensitive["ckpt"], "onnx", "fp32", out=tmp_path / "a.onnx", tolerance=1.0)
    with pytest.raises(ExportError, match="--max-float 2"):
        run_export(sensitive["ckpt"], "onnx", "int8", out=tmp_path / "a.onnx", tolerance=1.0, max_float=2)
    with pytest.raises(ExportError, match="labelled held-in images: demo val at .* is not reachable"):
        run_export(sensitive["ckpt"], "onnx", "int8", out=tmp_path / "a.onnx", tolerance=1.0,
                   calib_val=tmp_path / "nowhere", check_count=0)


@pytest.mark.slow
def test_the_tensorrt_shaped_graph_gets_the_same_fallback_in_fp16(sensitive, tmp_path, monkeypatch):
    """--int8-target tensorrt (what --format trt builds from): the same loop leaves the same layer out of
    INT8, and that layer stays in fp16 there (TensorRT's strongly typed mode runs it as typed). Ranked on
    4 images: ONNX Runtime runs the fp16 graph slowly on a CPU, and the fragile layer stands out on any."""
    monkeypatch.setattr("igldt.export.pipeline.RANK_IMAGES", 4)
    fitted = run_export(sensitive["ckpt"], "onnx", "int8", out=tmp_path / "trt.onnx", calib_count=8, check_count=0,
                        tolerance=1.0, int8_target="tensorrt", echo=lambda s: None)
    side = read_sidecar(fitted.path)["calibration"]
    assert side["target"] == "tensorrt" and side["float_layers"] == "fp16"
    assert side["left_in_float_layers"] == ["classifier"] and abs(side["accuracy"]["delta_miou_points"]) <= 1.0
    graph = onnx.load(str(fitted.path)).graph
    inits = {i.name: i for i in graph.initializer}
    node = next(n for n in graph.node if n.name == side["left_in_float"][0])
    assert inits[node.input[1]].data_type == onnx.TensorProto.FLOAT16  # float there means fp16, not fp32
