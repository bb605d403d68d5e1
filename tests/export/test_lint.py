"""TensorRT op-support lint and the integer-Clip rewrite."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.simplify import rewrite_integer_clip
from export.trt_lint import lint_model


def _model(nodes, inputs, outputs, inits=(), opset=19):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_lint_flags_what_tensorrt_rejects():
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"]),
        helper.make_node("Unique", ["v"], ["u"]),
        helper.make_node("Cast", ["x"], ["x8"], to=TensorProto.UINT8),
        helper.make_node("Cast", ["x8"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["xf"], ["xd"], to=TensorProto.DOUBLE),
        helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="cubic"),
        helper.make_node("DeformConv", ["x", "w", "off"], ["d"], pads=[1, 1, 0, 0], kernel_shape=[3, 3]),
        helper.make_node("Clip", ["i", "lo", "hi"], ["ic"]),
    ]
    inits = [
        w,
        scales,
        numpy_helper.from_array(np.array(0, np.int64), "lo"),
        numpy_helper.from_array(np.array(5, np.int64), "hi"),
    ]
    model = _model(
        nodes,
        [
            _vi("x", f, [1, 2, 8, 8]),
            _vi("v", f, [6]),
            _vi("off", f, [1, 18, 8, 6]),
            _vi("i", TensorProto.INT64, [4]),
        ],
        [
            _vi("nz", TensorProto.INT64, None),
            _vi("u", f, None),
            _vi("xd", TensorProto.DOUBLE, None),
            _vi("r", f, None),
            _vi("d", f, None),
            _vi("ic", TensorProto.INT64, None),
        ],
        inits,
    )
    report = lint_model(model)
    for target in ("10", "11"):
        rejected = " | ".join(f.line() for f in report.rejected(target))
        assert "Unique" in rejected and "not supported" in rejected
        assert "UINT8 is only allowed as a network input or output" in rejected
        assert "mode 'cubic' unsupported" in rejected
        assert "pads must be equal" in rejected
        assert "Clip: I64 input unsupported" in rejected
    assert [f.op for f in report.policy()] == ["NonZero"]
    assert any(f.level == "warn" and f.op == "DOUBLE" for f in report.findings)
    assert any(f.level == "warn" and "10.1" in f.message for f in report.findings)  # DeformConv plugin
    rows = {row.op: row.status for row in report.rows}
    assert rows["Unique"] == {"10": "reject", "11": "reject"} and rows["Cast"] == {"10": "warn", "11": "warn"}
    assert "NonZero" in report.table() and "TensorRT 10: 5 rejected" in report.summary()


def test_opset_newer_than_tensorrt_10_parses_is_a_warning():
    model = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", TensorProto.FLOAT, [2])],
        [_vi("y", TensorProto.FLOAT, [2])],
        opset=22,
    )
    report = lint_model(model)
    assert not report.rejected("10") and any(f.op == "opset" and f.target == "10" for f in report.findings)
    assert not any(f.op == "opset" and f.target == "11" for f in report.findings)


def test_integer_clip_rewrite_keeps_results():
    ort = pytest.importorskip("onnxruntime")
    nodes = [
        helper.make_node("Clip", ["i", "lo", "hi"], ["a"]),
        helper.make_node("Clip", ["i", "lo"], ["b"]),
        helper.make_node("Clip", ["f", "flo", "fhi"], ["c"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "lo"),
        numpy_helper.from_array(np.array(5, np.int64), "hi"),
        numpy_helper.from_array(np.array(-1, np.float32), "flo"),
        numpy_helper.from_array(np.array(1, np.float32), "fhi"),
    ]
    model = _model(
        nodes,
        [_vi("i", TensorProto.INT64, [6]), _vi("f", TensorProto.FLOAT, [6])],
        [
            _vi("a", TensorProto.INT64, [6]),
            _vi("b", TensorProto.INT64, [6]),
            _vi("c", TensorProto.FLOAT, [6]),
        ],
        inits,
    )
    feeds = {"i": np.array([-3, 0, 2, 5, 7, 100], np.int64), "f": np.linspace(-2, 2, 6).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    assert rewrite_integer_clip(model) == 2
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Max", "Min", "Max", "Clip"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    assert not lint_model(model).rejected("10")
