"""Float-graph rewrites that make the ``onnxruntime`` Q/DQ layout fast on onnxruntime's CPU provider.

onnxruntime's CPU provider has no fused INT8 ``ConvTranspose`` and runs its float one through a
slow col2im, so the pixel decoder's 2x up-samplers (``ConvTranspose``, kernel 4, stride 2,
padding 1) would stay float and cost as much as the whole INT8 backbone. They are rewritten
here, before calibration, as the exactly equivalent sub-pixel form

    Conv(kernel 2, pads 1, 4 * C_out channels) -> DepthToSpace(2, CRD) -> Slice(1:-1, 1:-1)

whose ``Conv`` onnxruntime quantises into a ``QLinearConv``; the ``DepthToSpace`` and ``Slice``
then move INT8 data (see :func:`calib.graph.insert_qdq`). Why it is exact: output row
``o = 2m' + r - 1`` of the transposed convolution reads input rows ``m' - 1`` and ``m'`` with
kernel taps ``(2, 0)`` for ``r = 0`` and ``(3, 1)`` for ``r = 1`` (same for columns), which is a
2x2 convolution per output phase ``(r_y, r_x)``, padded by one row/column on each side; the
phases interleave by ``DepthToSpace`` and the padding's extra border row/column is cropped.

The ``tensorrt`` layout does not use this: TensorRT quantises ``ConvTranspose`` natively.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from calib.graph import drop_unused_initializers

# Kernel taps of the transposed convolution (kernel 4, stride 2, padding 1) read by the 2x2
# window (rows m'-1, m') of output phase r: TAPS[r][j].
_TAPS = ((2, 0), (3, 1))


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def is_stride2_upsampler(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    """A ``ConvTranspose`` with kernel 4, stride 2, padding 1, one group and a constant 4-D weight."""
    if node.op_type != "ConvTranspose" or len(node.input) < 2 or node.input[1] not in initializers:
        return False
    a = _attrs(node)
    return (
        list(a.get("kernel_shape", [4, 4])) == [4, 4]
        and list(a.get("strides", [1, 1])) == [2, 2]
        and list(a.get("pads", [0, 0, 0, 0])) == [1, 1, 1, 1]
        and int(a.get("group", 1)) == 1  # type: ignore[call-overload]
        and not a.get("output_shape")
        and not any(a.get("output_padding", []))  # type: ignore[arg-type]
        and all(d == 1 for d in a.get("dilations", [1, 1]))  # type: ignore[union-attr]
        and len(initializers[node.input[1]].dims) == 4
        and list(initializers[node.input[1]].dims[2:]) == [4, 4]
        and (len(node.input) < 3 or not node.input[2] or node.input[2] in initializers)
    )


def subpixel_weight(weight: np.ndarray) -> np.ndarray:
    """ConvTranspose weight (C_in, C_out, 4, 4) -> Conv weight (4 * C_out, C_in, 2, 2).

    Output channel ``c * 4 + r_y * 2 + r_x`` is phase ``(r_y, r_x)`` of channel ``c``, the order
    ``DepthToSpace`` mode ``CRD`` reads.
    """
    c_in, c_out = weight.shape[:2]
    out = np.zeros((c_out, 2, 2, c_in, 2, 2), weight.dtype)
    for ry in range(2):
        for rx in range(2):
            for jy in range(2):
                for jx in range(2):
                    out[:, ry, rx, :, jy, jx] = weight[:, :, _TAPS[ry][jy], _TAPS[rx][jx]].T
    return out.reshape(c_out * 4, c_in, 2, 2)


def rewrite_upsamplers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every stride-2 ``ConvTranspose`` up-sampler in sub-pixel form.

    Returns the new model and the number of nodes rewritten. New initializers are named after
    the originals (``<weight>_subpixel``) so that the module scope of the nodes, which decides
    what is quantised, survives; node metadata is copied for the same reason. The crop keeps
    the original output name, so nothing downstream changes.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        if not is_stride2_upsampler(node, inits):
            nodes.append(node)
            continue
        count += 1
        base = node.name or node.output[0]
        weight = numpy_helper.to_array(inits[node.input[1]])
        w_name = f"{node.input[1]}_subpixel"
        graph.initializer.append(numpy_helper.from_array(subpixel_weight(weight), w_name))
        conv_inputs = [node.input[0], w_name]
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(inits[node.input[2]])
            b_name = f"{node.input[2]}_subpixel"
            graph.initializer.append(numpy_helper.from_array(np.repeat(bias, 4), b_name))
            conv_inputs.append(b_name)
        starts, ends, axes = f"{base}_crop_starts", f"{base}_crop_ends", f"{base}_crop_axes"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([1, 1], np.int64), starts),
                numpy_helper.from_array(np.array([-1, -1], np.int64), ends),
                numpy_helper.from_array(np.array([2, 3], np.int64), axes),
            ]
        )
        phases, interleaved = f"{base}_phases", f"{base}_interleaved"
        new = [
            helper.make_node(
                "Conv", conv_inputs, [phases], name=f"{base}_subpixel", kernel_shape=[2, 2], pads=[1, 1, 1, 1]
            ),
            helper.make_node(
                "DepthToSpace", [phases], [interleaved], name=f"{base}_interleave", blocksize=2, mode="CRD"
            ),
            helper.make_node(
                "Slice", [interleaved, starts, ends, axes], [node.output[0]], name=f"{base}_crop"
            ),
        ]
        for n in new:
            n.metadata_props.extend(node.metadata_props)
        nodes.extend(new)
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        drop_unused_initializers(graph)
    return out, count


def prepare_for_layout(model: onnx.ModelProto, layout: str) -> onnx.ModelProto:
    """The float model the given Q/DQ layout is calibrated and quantised from."""
    if layout == "onnxruntime":
        return rewrite_upsamplers(model)[0]
    return model
