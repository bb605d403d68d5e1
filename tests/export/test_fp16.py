"""FP16 conversion: the FP32 block set is found structurally, the graph runs, accuracy holds."""

import random

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from export.fp16 import convert_to_fp16, emulate_fp16, fp32_nodes
from export.heads import ExportedModel
from export.parity import compare, make_samples, open_session
from export.simplify import finalize
from tests.helpers.export_models import tiny_graph, tiny_source

pytest.importorskip("onnxruntime")

H, W = 64, 128
F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


@pytest.fixture(scope="module")
def tiny():
    return tiny_source(), {impl: tiny_graph("raw", impl)[0] for impl in ("native", "decomposed")}


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _producer(model, name):
    return next((n for n in model.graph.node if name in n.output), None)


def _spec(source):
    return {
        "shape": [1, 3, H, W],
        "dtype": "float32",
        "normalize_in_graph": False,
        "normalization": {"mean": list(source.config.pixel_mean), "std": list(source.config.pixel_std)},
    }


def test_fragile_ops_compute_in_fp32(tiny):
    _, graphs = tiny
    model16, report = convert_to_fp16(graphs["native"])
    model16 = finalize(model16)
    types = _types(model16)
    float_in = lambda node: [types[n] for n in node.input if n and types.get(n) in (F32, F16)]  # noqa: E731
    checked = 0
    for node in model16.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "ReduceL2", "ArgMax"):
            assert set(float_in(node)) == {F32}, node.op_type
            checked += 1
    assert checked >= 20
    # The similarity feeding each ArgMax: Add(MatMul(queries, tokens), mask bias), all FP32.
    for argmax in (n for n in model16.graph.node if n.op_type == "ArgMax"):
        add = _producer(model16, argmax.input[0])
        assert add.op_type == "Add" and set(float_in(add)) == {F32}
        producers = {_producer(model16, name).op_type: _producer(model16, name) for name in add.input}
        assert set(producers) == {"MatMul", "Unsqueeze"}, producers  # similarity + the (B, 1, Q, N) bias
        bias = _producer(model16, producers["Unsqueeze"].input[0])
        assert bias.op_type == "Where" and set(float_in(bias)) == {F32}  # 0 / -inf
        assert set(float_in(producers["MatMul"])) == {F32}
    # L2-normalize divisions are FP32; convolutions and Gemms are FP16 with FP16 weights.
    for node in model16.graph.node:
        if node.op_type in ("Conv", "Gemm", "DeformConv"):
            assert set(float_in(node)) == {F16}, node.op_type
    assert types[model16.graph.input[0].name] == F32
    assert all(types[o.name] == F32 for o in model16.graph.output)
    assert report.fp32_nodes["prototype similarity"] > 0 and report.fp32_nodes["L2-normalize"] > 0
    assert report.fp16_nodes > 2 * sum(report.fp32_nodes.values())


def test_fp16_graph_runs_and_agrees(tiny):
    source, graphs = tiny
    model16 = finalize(convert_to_fp16(graphs["native"])[0])
    reference = ExportedModel(source.model, "raw").eval()
    samples = make_samples(_spec(source), random=1, scenes=1)
    shipped = compare(open_session(model16), reference, samples, head="raw", num_classes=19)
    emulated = compare(
        open_session(finalize(emulate_fp16(model16))), reference, samples, head="raw", num_classes=19
    )
    for report in (shipped, emulated):
        assert report.worst("pred_logits").relative_error < 1e-2, report.table()
        assert report.label_agreement >= 0.99, report.table()
    # The emulation really rounds every op (onnxruntime's CPU provider does not).
    assert emulated.worst("pred_masks").mean_abs > shipped.worst("pred_masks").mean_abs


def test_decomposed_index_math_stays_fp32(tiny):
    source, graphs = tiny
    plan = fp32_nodes(graphs["decomposed"])
    nodes = graphs["decomposed"].graph.node
    floors = [i for i, n in enumerate(nodes) if n.op_type == "Floor"]
    assert floors and all(plan.get(i) == "index math" for i in floors)
    model16 = finalize(convert_to_fp16(graphs["decomposed"])[0])
    types = _types(model16)
    for node in model16.graph.node:
        if node.op_type == "Floor":
            assert types[node.input[0]] == F32
    report = compare(
        open_session(model16),
        ExportedModel(source.model, "raw").eval(),
        make_samples(_spec(source), random=1, scenes=0),
        head="raw",
        num_classes=19,
    )
    assert report.worst("pred_logits").relative_error < 1e-2 and report.label_agreement >= 0.99


def test_block_set_does_not_depend_on_names(tiny):
    _, graphs = tiny
    model = onnx.ModelProto()
    model.CopyFrom(graphs["native"])
    before = {i: r for i, r in fp32_nodes(model).items()}
    rng = random.Random(0)
    for node in model.graph.node:
        node.name = f"n{rng.randrange(10**9)}"
    assert fp32_nodes(model) == before


def _prototype_graph():
    """x -> Linear -> L2-normalize -> MatMul with Linear(q)-normalized queries -> Where -> ArgMax,
    plus a Conv branch; everything a hand-written miniature of PEM-CA."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1")
    wq = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "wq")
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    eps = numpy_helper.from_array(np.array(1e-12, np.float32), "eps")
    ninf = numpy_helper.from_array(np.array(-np.inf, np.float32), "ninf")
    conv_w = numpy_helper.from_array(rng.standard_normal((2, 1, 1, 1)).astype(np.float32), "conv_w")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["lin"]),
        helper.make_node("Add", ["lin", "b1"], ["tok"]),
        helper.make_node("ReduceL2", ["tok", "axes"], ["norm"], keepdims=1),
        helper.make_node("Clip", ["norm", "eps"], ["normc"]),
        helper.make_node("Div", ["tok", "normc"], ["tokn"]),
        helper.make_node("MatMul", ["q", "wq"], ["ql"]),
        helper.make_node("LayerNormalization", ["ql", "lns", "lnb"], ["qn"], axis=-1),
        helper.make_node("Transpose", ["qn"], ["qt"], perm=[1, 0]),
        helper.make_node("MatMul", ["tokn", "qt"], ["sim"]),
        helper.make_node("Where", ["cond", "ninf", "sim"], ["simm"]),
        helper.make_node("ArgMax", ["simm"], ["idx"], axis=0, keepdims=0),
        helper.make_node("Unsqueeze", ["x", "ax01"], ["x4"]),
        helper.make_node("Conv", ["x4", "conv_w"], ["y"]),
    ]
    inits = [w1, b1, wq, axes, eps, ninf, conv_w]
    inits += [
        numpy_helper.from_array(np.ones(8, np.float32), "lns"),
        numpy_helper.from_array(np.zeros(8, np.float32), "lnb"),
    ]
    inits.append(numpy_helper.from_array(np.array([0, 1], np.int64), "ax01"))
    graph = helper.make_graph(
        nodes,
        "mini",
        [
            helper.make_tensor_value_info("x", F32, [5, 8]),
            helper.make_tensor_value_info("q", F32, [3, 8]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, [5, 3]),
        ],
        [
            helper.make_tensor_value_info("idx", TensorProto.INT64, [3]),
            helper.make_tensor_value_info("y", F32, [1, 2, 5, 8]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def test_structural_rules_on_a_hand_built_graph():
    model = _prototype_graph()
    plan = {model.graph.node[i].output[0]: reason for i, reason in fp32_nodes(model).items()}
    assert plan["simm"] == plan["sim"] == plan["qt"] == "prototype similarity"
    assert plan["tokn"] == plan["normc"] == "prototype similarity"  # the normalize feeding it
    assert plan["idx"] == "op type" and plan["qn"] == "op type"
    # Parameterised layers stay FP16: the Linear (MatMul 2-D weight + bias Add) and the Conv.
    assert "lin" not in plan and "tok" not in plan and "ql" not in plan and "y" not in plan
    model16, report = convert_to_fp16(model)
    model16 = finalize(model16)
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((5, 8)).astype(np.float32),
        "q": rng.standard_normal((3, 8)).astype(np.float32),
        "cond": rng.random((5, 3)) < 0.3,
    }
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(model16.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_allclose(got[1], ref[1], rtol=2e-3, atol=2e-3)
    assert report.initializers_converted >= 3  # w1, b1, wq, conv_w in FP16


def test_rules_select_the_block_set(tiny):
    _, graphs = tiny
    full = fp32_nodes(graphs["native"])
    only_ops = fp32_nodes(graphs["native"], rules=("op type",))
    assert set(only_ops.values()) == {"op type"} and set(only_ops) < set(full)
    with pytest.raises(ExportError, match="unknown FP16 block rule"):
        fp32_nodes(graphs["native"], rules=("everything",))
