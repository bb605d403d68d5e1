"""Joining the raw-model graph and the post-processing graph into one ONNX model."""

from __future__ import annotations

import onnx

from export.errors import ExportError


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in graph.input} | {v.name for v in graph.output}
    names |= {t.name for t in graph.initializer} | {v.name for v in graph.value_info}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    names.discard("")
    return names


def attach_postprocess(raw: onnx.ModelProto, post: onnx.ModelProto, prefix: str = "post/") -> onnx.ModelProto:
    """Feed ``raw``'s outputs into ``post``'s inputs (matched by name) and return the joined model.

    ``post``'s internal tensor and node names get ``prefix``; its graph outputs keep their names and
    become the joined model's outputs. Both models must import the same default opset.

    Raises:
        ExportError: when the inputs of ``post`` are not outputs of ``raw``, the opsets differ or
            output names collide.
    """
    raw_outputs = {v.name for v in raw.graph.output}
    post_inputs = {v.name for v in post.graph.input}
    missing = post_inputs - raw_outputs
    if missing:
        raise ExportError(f"post-processing inputs {sorted(missing)} are not outputs of the model graph")
    raw_opsets = {(e.domain or "ai.onnx"): e.version for e in raw.opset_import}
    post_opsets = {(e.domain or "ai.onnx"): e.version for e in post.opset_import}
    for domain, version in post_opsets.items():
        if domain in raw_opsets and raw_opsets[domain] != version:
            raise ExportError(f"opset mismatch for {domain}: {raw_opsets[domain]} vs {version}")
    keep_names = post_inputs | {v.name for v in post.graph.output}
    clash = {v.name for v in post.graph.output} & _all_names(raw.graph)
    if clash:
        raise ExportError(f"post-processing output names {sorted(clash)} clash with model tensors")

    def rename(name: str) -> str:
        return name if (not name or name in keep_names) else prefix + name

    joined = onnx.ModelProto()
    joined.CopyFrom(raw)
    graph = joined.graph
    for node in post.graph.node:
        new = graph.node.add()
        new.CopyFrom(node)
        new.name = prefix + node.name if node.name else ""
        new.input[:] = [rename(n) for n in node.input]
        new.output[:] = [rename(n) for n in node.output]
        if any(
            attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute
        ):
            raise ExportError(f"post-processing node {node.name or node.op_type} has a subgraph")
    for tensor in post.graph.initializer:
        new_t = graph.initializer.add()
        new_t.CopyFrom(tensor)
        new_t.name = rename(tensor.name)
    for value in post.graph.value_info:
        new_v = graph.value_info.add()
        new_v.CopyFrom(value)
        new_v.name = rename(value.name)
    # The raw outputs become internal tensors; keep their typed shapes as value_info.
    for value in raw.graph.output:
        graph.value_info.add().CopyFrom(value)
    del graph.output[:]
    graph.output.extend(post.graph.output)
    for domain, version in post_opsets.items():
        if domain not in raw_opsets:
            joined.opset_import.add(domain="" if domain == "ai.onnx" else domain, version=version)
    return joined
