"""The INT8 graph's float tail and shared Concat scales (export/quantize.py) on hand-built graphs."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from igldt.export.quantize import float_tail, shared_concat_scales  # noqa: E402


def _graph(tail: str):
    """x -> Relu -> Q -> DQ -> (ArgMax | graph output), scale 0.5, zero point 0 (uint8)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq")]
    if tail == "argmax":
        nodes.append(helper.make_node("ArgMax", ["dq"], ["labels"], axis=1, keepdims=1, name="argmax"))
        out = helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 1, 2, 2])
    else:
        out = helper.make_tensor_value_info("dq", TensorProto.FLOAT, [1, 3, 2, 2])
    m = helper.make_model(helper.make_graph(nodes, "t", [x], [out], initializer=inits),
                          opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def _run(m, x):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("tail", ["argmax", "output"])
def test_the_rounding_pair_before_argmax_or_the_output_is_dropped(tail):
    # 1.1 and 1.2 round to the same step (1.0): through Q/DQ ArgMax sees a tie and picks the first class
    x = np.zeros((1, 3, 2, 2), np.float32)
    x[0, 0], x[0, 1] = 1.1, 1.2
    before = _run(_graph(tail), x)
    m, dropped = float_tail(_graph(tail))
    onnx.checker.check_model(m)
    assert dropped == 1 and [n.op_type for n in m.graph.node] == ["Relu"] + (["ArgMax"] if tail == "argmax" else [])
    after = _run(m, x)
    if tail == "argmax":
        assert (before == 0).all() and (after == 1).all()  # the exact float argmax
    else:
        np.testing.assert_array_equal(after, x)            # the float logits, not their rounding
        assert m.graph.output[0].name == "dq"


def test_a_pair_that_feeds_an_integer_consumer_stays():
    m = _graph("argmax")
    m.graph.node.append(helper.make_node("Relu", ["dq"], ["other"], name="other"))  # a second consumer
    m, dropped = float_tail(m)
    assert dropped == 0 and len(m.graph.node) == 5


def _concat(extra_consumer: bool = False):
    """a, b -> Q/DQ each (scales 0.1, 0.2) -> Concat -> Q/DQ (scale 0.25, zero point 10) -> output."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 1, 1]) for n in ("a", "b")]
    inits = [numpy_helper.from_array(np.array(v, t), n) for n, v, t in
             [("sa", 0.1, np.float32), ("sb", 0.2, np.float32), ("sc", 0.25, np.float32),
              ("za", 0, np.uint8), ("zb", 0, np.uint8), ("zc", 10, np.uint8)]]
    nodes = [helper.make_node("QuantizeLinear", ["a", "sa", "za"], ["qa"], name="qa"),
             helper.make_node("DequantizeLinear", ["qa", "sa", "za"], ["da"], name="da"),
             helper.make_node("QuantizeLinear", ["b", "sb", "zb"], ["qb"], name="qb"),
             helper.make_node("DequantizeLinear", ["qb", "sb", "zb"], ["db"], name="db"),
             helper.make_node("Concat", ["da", "db"], ["c"], axis=1, name="cat"),
             helper.make_node("QuantizeLinear", ["c", "sc", "zc"], ["qc"], name="qc"),
             helper.make_node("DequantizeLinear", ["qc", "sc", "zc"], ["y"], name="dc")]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["da"], ["r"], name="other"))
        outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 2, 1, 1]))
    m = helper.make_model(helper.make_graph(nodes, "t", ins, outs, initializer=inits),
                          opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def test_a_concat_s_inputs_take_its_output_scale():
    """Both inputs are quantised with the output's scale and zero point, so QLinearConcat only copies; the
    result is each value rounded once to the output's step (hand computation), as before the change up to
    that one rounding."""
    a, b = np.array([0.33, 1.02], np.float32).reshape(1, 2, 1, 1), np.array([2.1, 0.0], np.float32).reshape(1, 2, 1, 1)
    m, changed = shared_concat_scales(_concat())
    onnx.checker.check_model(m)
    assert changed == 2
    assert all(list(n.input[1:3]) == ["sc", "zc"] for n in m.graph.node if n.name in ("qa", "da", "qb", "db"))
    y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a, "b": b})[0]
    hand = (np.clip(np.round(np.concatenate([a, b], 1) / 0.25) + 10, 0, 255) - 10) * 0.25  # 0.25, 1.0, 2.0, 0.0
    np.testing.assert_allclose(y, hand)
    np.testing.assert_allclose(y.ravel(), [0.25, 1.0, 2.0, 0.0])


def test_a_concat_input_shared_with_another_consumer_keeps_its_scale():
    m, changed = shared_concat_scales(_concat(extra_consumer=True))
    assert changed == 0 and [n.input[1] for n in m.graph.node if n.name in ("qa", "qb")] == ["sa", "sb"]
