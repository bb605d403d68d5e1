"""Float vs INT8 (Q/DQ fused by onnxruntime) for the decoder ops the ``--decoder`` groups quantise.

One-op graphs of the exact STDC1 / R50 decoder shapes at 512x1024 (256-d, 100 queries): the
token-level ``Gemm`` at 1/8 and 1/16 scale (8192 and 2048 tokens; -> ``QGemm``) and the mask
einsum (100 x 256 x 32768; -> ``MatMulIntegerToFloat``, quantising its activation B included),
quantised by :func:`calib.graph.insert_qdq` in the ``onnxruntime`` layout with seeded data; one
intra-op thread, interleaved rounds, medians. Usage: ``python benchmarks/int8_decoder_ops.py [--runs 15]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

P = "model.sem_seg_head.predictor."  # the scope that marks a node as transformer decoder


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "op", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def mask_einsum(rng: np.random.Generator) -> tuple[onnx.ModelProto, tuple[str, ...], dict[str, np.ndarray]]:
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Relu", ["a"], ["a_r"], name="relu_a"),
        helper.make_node("Relu", ["b"], ["b_r"], name="relu_b"),
        helper.make_node("Mul", ["a_r", P + "s"], ["a_s"], name="scale"),  # decoder scope
        helper.make_node("MatMul", ["a_s", "b_r"], ["y"], name="einsum"),
    ]
    model = _model(
        nodes,
        [
            helper.make_tensor_value_info("a", f, [1, 100, 256]),
            helper.make_tensor_value_info("b", f, [1, 256, 32768]),
        ],
        [helper.make_tensor_value_info("y", f, [1, 100, 32768])],
        [numpy_helper.from_array(np.ones(1, np.float32), P + "s")],
    )
    feeds = {"a": rng.random((1, 100, 256), np.float32), "b": rng.random((1, 256, 32768), np.float32)}
    return model, ("mask_einsum",), feeds


def token_gemm(
    rng: np.random.Generator, rows: int
) -> tuple[onnx.ModelProto, tuple[str, ...], dict[str, np.ndarray]]:
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), P + "w")
    b = numpy_helper.from_array(rng.standard_normal(256).astype(np.float32), P + "b")
    q = numpy_helper.from_array(rng.standard_normal((100, 256)).astype(np.float32), P + "q")
    nodes = [  # two query-level Gemms (100 rows) so that the token Gemm is told apart by its rows
        helper.make_node("Relu", ["a"], ["a_r"], name="relu_a"),
        helper.make_node("Relu", [P + "q"], ["q_r"], name="relu_q"),
        helper.make_node("Gemm", ["q_r", P + "w", P + "b"], ["z1"], transB=1, name="query_1"),
        helper.make_node("Gemm", ["z1", P + "w", P + "b"], ["z2"], transB=1, name="query_2"),
        helper.make_node("Gemm", ["a_r", P + "w", P + "b"], ["y"], transB=1, name="tokens"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("a", f, [rows, 256])],
        [
            helper.make_tensor_value_info("y", f, [rows, 256]),
            helper.make_tensor_value_info("z2", f, [100, 256]),
        ],
        [w, b, q],
    )
    return model, ("tokens",), {"a": rng.random((rows, 256), np.float32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    from calib.graph import decoder_targets, insert_qdq
    from runtime.core.backends.ort_session import create_session

    rng = np.random.default_rng(0)
    cases = {
        "token Gemm 8192x256x256": token_gemm(rng, 8192),
        "token Gemm 2048x256x256": token_gemm(rng, 2048),
        "mask einsum 100x256x32768": mask_einsum(rng),
    }
    results = {}
    for name, (model, groups, feeds) in cases.items():
        targets = decoder_targets(model, groups)
        scales = {t: 0.01 for target in targets for t in (target.activation, target.weight)}
        quantized = insert_qdq(model, targets, scales, layout="onnxruntime")
        sessions = {
            "fp32": create_session(model.SerializeToString(), threads=1),
            "int8": create_session(quantized.SerializeToString(), threads=1),
        }
        for session in sessions.values():
            session.run(None, feeds)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.runs):
            for k, session in sessions.items():
                t0 = time.perf_counter()
                session.run(None, feeds)
                times[k].append(time.perf_counter() - t0)
        med = {k: round(1e3 * statistics.median(v), 2) for k, v in times.items()}
        results[name] = {**med, "int8_over_fp32": round(med["int8"] / med["fp32"], 3)}
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
