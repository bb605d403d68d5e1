"""Parity checks at full size without the memory peaks: chunked semantic scores, no ORT arena."""

import numpy as np
import torch

from export.parity import SCORE_QUERY_CHUNK, labels_from_outputs, open_session, semantic_scores
from pem.inference import semantic_inference


def test_chunked_semantic_scores_equal_the_official_inference():
    rng = np.random.default_rng(0)
    queries = 2 * SCORE_QUERY_CHUNK + 5  # a partial last chunk
    logits = rng.standard_normal((2, queries, 20)).astype(np.float32)
    masks = rng.standard_normal((2, queries, 8, 12)).astype(np.float32)
    ours = semantic_scores(logits, masks)
    official = semantic_inference(torch.from_numpy(logits), torch.from_numpy(masks), (32, 48))
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=1e-5)
    labels = labels_from_outputs("raw", {"pred_logits": logits, "pred_masks": masks}, num_classes=19)
    assert labels.dtype == np.int32 and np.array_equal(labels, official.argmax(1).numpy())


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
