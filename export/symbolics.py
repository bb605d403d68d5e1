"""ONNX translation of PEM's custom op, for both PyTorch exporters.

* ``pem::modulated_deform_conv2d`` -> the standard ONNX ``DeformConv`` (opset >= 19): inputs
  ``(X, W, offset, B, mask)``, same DCNv2 offset/mask layout as our op.

The PEM-CA prototype selection needs no custom op: under an exporter it is plain PyTorch
(:func:`pem.ops.prototype.masked_similarity` + ``argmax`` + ``gather``), which both exporters turn
into ``MatMul`` + ``Add`` (the 0 / ``-inf`` mask bias) + ``ArgMax`` (first index on ties, like
``torch.argmax``) + ``GatherElements``: no NonZero, ScatterND or data-dependent shapes.

The dynamo exporter (``torch.onnx.export(dynamo=True)``) takes onnxscript functions through its
``custom_translation_table`` (:func:`custom_translation_table`). The deprecated TorchScript exporter
takes ``register_custom_op_symbolic`` functions; :func:`torchscript_symbolics` registers them for
the duration of one export and removes them afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from export.errors import ExportError

MIN_OPSET = 19  # DeformConv appeared in opset 19.
MAX_OPSET = 22  # the newest opset checked with onnxruntime and onnxscript here.

DEFORM_CONV_OP = "pem::modulated_deform_conv2d"


def check_opset(opset: int) -> None:
    """Raise :class:`ExportError` unless ``MIN_OPSET <= opset <= MAX_OPSET``."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset}: must be between {MIN_OPSET} (DeformConv) and {MAX_OPSET}")


def _static_dim(value: Any, axis: int) -> int | None:
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    try:
        dim = shape[axis]
    except (IndexError, TypeError):
        return None
    return dim if isinstance(dim, int) else None


def _deform_attributes(
    weight_shape: tuple[int | None, int | None], offset_channels: int | None
) -> dict[str, Any]:
    """kernel_shape and offset_group from the (static) weight and offset shapes."""
    kh, kw = weight_shape
    attrs: dict[str, Any] = {}
    if kh is not None and kw is not None:
        attrs["kernel_shape"] = [kh, kw]
        if offset_channels is not None:
            if offset_channels % (2 * kh * kw):
                raise ExportError(
                    f"DeformConv export: offset has {offset_channels} channels, not a multiple of "
                    f"2*kH*kW = {2 * kh * kw}"
                )
            attrs["offset_group"] = offset_channels // (2 * kh * kw)
    return attrs


def custom_translation_table(opset: int = MIN_OPSET) -> dict[Callable[..., Any], Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True, opset_version=opset)``."""
    check_opset(opset)
    op = getattr(importlib.import_module("onnxscript"), f"opset{opset}")

    def deform_conv(
        input: Any,
        offset: Any,
        mask: Any,
        weight: Any,
        bias: Any,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
    ) -> Any:
        attrs = _deform_attributes((_static_dim(weight, 2), _static_dim(weight, 3)), _static_dim(offset, 1))
        return op.DeformConv(
            input,
            weight,
            offset,
            bias,
            mask,
            dilations=list(dilation),
            group=1,
            pads=list(padding) + list(padding),
            strides=list(stride),
            **attrs,
        )

    return {
        torch.ops.pem.modulated_deform_conv2d.default: deform_conv,
    }


# ---------------------------------------------------------------------------------------------
# TorchScript exporter (fallback for older torch)


def _ts_deform_conv(
    g: Any,
    input: Any,
    offset: Any,
    mask: Any,
    weight: Any,
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
) -> Any:
    from torch.onnx import symbolic_helper as sh

    stride = sh._get_const(stride, "is", "stride")
    padding = sh._get_const(padding, "is", "padding")
    dilation = sh._get_const(dilation, "is", "dilation")
    weight_sizes = sh._get_tensor_sizes(weight) or [None] * 4
    offset_sizes = sh._get_tensor_sizes(offset) or [None] * 2
    attrs = _deform_attributes((weight_sizes[2], weight_sizes[3]), offset_sizes[1])
    if sh._is_none(bias):
        if weight_sizes[0] is None:
            raise ExportError("DeformConv export: bias-free deformable conv needs a static weight shape")
        bias = g.op("Constant", value_t=torch.zeros(weight_sizes[0]))
    return g.op(
        "DeformConv",
        input,
        weight,
        offset,
        bias,
        mask,
        dilations_i=list(dilation),
        group_i=1,
        pads_i=list(padding) * 2,
        strides_i=list(stride),
        **{f"{key}_i": value for key, value in attrs.items()},
    )


@contextlib.contextmanager
def torchscript_symbolics(opset: int = MIN_OPSET) -> Iterator[None]:
    """Register the TorchScript-exporter symbolic of the custom op for one export, then remove it."""
    check_opset(opset)
    registered = []
    try:
        for name, fn in ((DEFORM_CONV_OP, _ts_deform_conv),):
            torch.onnx.register_custom_op_symbolic(name, fn, opset)
            registered.append(name)
        yield
    finally:
        for name in registered:
            torch.onnx.unregister_custom_op_symbolic(name, opset)
