"""The INT8 graph's float tail (export/quantize.py: float_tail) on hand-built graphs."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from igldt.export.quantize import float_tail  # noqa: E402


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
