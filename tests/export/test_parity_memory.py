"""Parity checks at full size without the memory peaks: no onnxruntime arena. (The raw head's
class scores are formed at mask resolution by runtime.core.postprocess.semantic_scores_from_raw, so no
(B, Q, H, W) tensor is made at all.)"""

import numpy as np

from export.parity import open_session


def test_check_sessions_run_without_a_memory_arena(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    session = open_session(model)
    options = session.get_session_options()
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    assert session.run(None, {"x": np.array([[-1, 2, -3, 4]], np.float32)})[0].tolist() == [[0, 2, 0, 4]]
