"""``--deform-impl decomposed``: deformable convolution written with standard ONNX ops only.

For runtimes without ``DeformConv`` (older TensorRT, TFLite-style converters, some NPUs) the
deformable layers are traced through :func:`pem.ops.deform_conv.deform_conv2d_native`, a pure-PyTorch
bilinear-sampling implementation (``Gather``-based) that exports to plain ops. The switch is module
surgery on a deep copy of the model: the original model and every other model are untouched.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from pem.ops.deform_conv import ModulatedDeformConv2d, deform_conv2d_native


class DecomposedDeformConv2d(ModulatedDeformConv2d):
    """A :class:`ModulatedDeformConv2d` whose forward traces to standard ops (no custom op)."""

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return deform_conv2d_native(
            x,
            offset,
            mask,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            per_tap=False,  # all taps at once: ~6x fewer ONNX nodes than the per-tap loop
        )


def with_decomposed_deform_conv(model: nn.Module) -> tuple[nn.Module, int]:
    """Deep copy of ``model`` whose deformable convs export as standard ops; returns (copy, count)."""
    clone = copy.deepcopy(model)
    count = 0
    for module in clone.modules():
        if type(module) is ModulatedDeformConv2d:
            module.__class__ = DecomposedDeformConv2d
            count += 1
    return clone, count
