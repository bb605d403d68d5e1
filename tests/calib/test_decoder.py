"""Opt-in INT8 of transformer-decoder ops (token Gemm, mask einsum) and the prototype-stability
measure, on a small hand-built graph shaped like the decoder (no torch)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calib.accuracy import prototype_outputs, prototype_stability
from calib.errors import CalibrationError
from calib.graph import FLOAT_ONLY_OPS, check_qdq, dequantized_consumers, find_targets, insert_qdq

ort = pytest.importorskip("onnxruntime")
P = "model.sem_seg_head.predictor."


def _decoder_like(seed: int = 0) -> onnx.ModelProto:
    """images -> backbone conv -> 64 pixel tokens; 2 queries through two query-level Gemms;
    token Gemm -> similarity -> ArgMax (prototype choice); mask einsum (queries x features)."""
    rng = np.random.default_rng(seed)

    def init(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [
        init("model.backbone.conv.weight", (8, 3, 3, 3)),
        init(P + "tok.weight", (8, 8)),
        init(P + "tok.bias", (8,)),
        init(P + "q1.weight", (8, 8)),
        init(P + "q1.bias", (8,)),
        init(P + "q2.weight", (8, 8)),
        init(P + "q2.bias", (8,)),
        init(P + "query", (2, 8)),
        numpy_helper.from_array(np.array([8, 64], np.int64), "s_feat"),
        numpy_helper.from_array(np.array([1, 8, 64], np.int64), "s_feat3"),
        numpy_helper.from_array(np.array([1, 2, 8], np.int64), "s_q3"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "model.backbone.conv.weight"], ["feat"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["feat"], ["feat_r"]),
        helper.make_node("Reshape", ["feat_r", "s_feat"], ["feat_2d"]),
        helper.make_node("Transpose", ["feat_2d"], ["tokens_in"], perm=[1, 0]),  # (64, 8)
        helper.make_node("Gemm", ["tokens_in", P + "tok.weight", P + "tok.bias"], ["tokens"], transB=1),
        helper.make_node("Relu", [P + "query"], ["q0"]),
        helper.make_node("Gemm", ["q0", P + "q1.weight", P + "q1.bias"], ["q1"], transB=1),
        helper.make_node("Gemm", ["q1", P + "q2.weight", P + "q2.bias"], ["q2"], transB=1),
        helper.make_node("Transpose", ["q2"], ["q2_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["tokens", "q2_t"], ["similarity"]),  # (64, 2), rank 2
        helper.make_node("ArgMax", ["similarity"], ["prototype"], axis=0, keepdims=0),
        helper.make_node("Reshape", ["q2", "s_q3"], ["q3"]),
        helper.make_node("Reshape", ["feat_r", "s_feat3"], ["feat3"]),
        helper.make_node("MatMul", ["q3", "feat3"], ["masks"]),  # (1, 2, 64): the mask einsum
    ]
    for i, node in enumerate(nodes):  # exported graphs name every node; Q/DQ insertion relies on it
        node.name = f"{node.op_type.lower()}_{i}"
    graph = helper.make_graph(
        nodes,
        "decoder_like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, 2, 64]),
            helper.make_tensor_value_info("prototype", TensorProto.INT64, [2]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def _scales(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    from calib.quantize import with_outputs

    names = [v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    names.append("images")
    session = ort.InferenceSession(
        with_outputs(model, names).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    values = session.run(names, {"images": x})
    return {n: float(np.abs(v).max()) / 127.0 for n, v in zip(names, values)}


def test_decoder_groups_pick_token_gemm_and_mask_einsum_only() -> None:
    model = _decoder_like()
    base = find_targets(model)
    assert [t.op_type for t in base] == ["Conv"]
    tokens = [t for t in find_targets(model, decoder=["tokens"]) if t.part == "transformer_decoder"]
    assert [(t.op_type, t.weight) for t in tokens] == [("Gemm", P + "tok.weight")]  # not the query Gemms
    einsum = [t for t in find_targets(model, decoder=["mask_einsum"]) if t.part == "transformer_decoder"]
    assert [(t.activation, t.weight, t.weight_is_activation) for t in einsum] == [("q3", "feat3", True)]
    with pytest.raises(CalibrationError, match="decoder group 'similarity'"):
        find_targets(model, decoder=["similarity"])


def test_decoder_int8_fuses_on_onnxruntime_and_stays_close(tmp_path) -> None:
    model = _decoder_like()
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    targets = find_targets(model, decoder=["tokens", "mask_einsum"])
    quantized = insert_qdq(model, targets, _scales(model, x), layout="onnxruntime")
    assert check_qdq(quantized, "onnxruntime") == []
    assert not [n for n in dequantized_consumers(quantized) if n.op_type in FLOAT_ONLY_OPS]  # ArgMax float
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert "QGemm" in ops and "MatMulIntegerToFloat" in ops  # INT32 bias lets the token Gemm fuse
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want, got = reference.run(["masks"], {"images": x})[0], session.run(["masks"], {"images": x})[0]
    assert np.abs(want - got).max() < 0.05 * np.abs(want).max()


def test_prototype_stability_compares_argmax_choices() -> None:
    model = _decoder_like()
    assert prototype_outputs(model) == ["prototype"]
    inputs = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(3)]
    same = prototype_stability(model, model, inputs)
    assert same["agreement"] == same["agreement_within_tie"] == 1.0 and same["choices"] == 6
    other = _decoder_like(seed=5)  # other weights: different choices somewhere, same tensor names
    changed = prototype_stability(model, other, inputs)
    assert changed["agreement"] < 1.0 and changed["agreement"] <= changed["agreement_within_tie"] <= 1.0
