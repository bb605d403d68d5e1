"""Custom operators of the PEM model: modulated deformable convolution and the prototype gather."""

from pem.ops.deform_conv import (
    ModulatedDeformConv2d,
    conv_output_size,
    deform_conv2d_native,
    deform_conv_backend,
    modulated_deform_conv2d,
    modulated_deform_conv2d_op,
)
from pem.ops.prototype import prototype_gather, prototype_gather_reference

__all__ = [
    "ModulatedDeformConv2d",
    "conv_output_size",
    "deform_conv2d_native",
    "deform_conv_backend",
    "modulated_deform_conv2d",
    "modulated_deform_conv2d_op",
    "prototype_gather",
    "prototype_gather_reference",
]
