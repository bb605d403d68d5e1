"""Custom operators of the PEM model: modulated deformable convolution and the PEM-CA prototype selection."""

from pem.ops.deform_conv import (
    ModulatedDeformConv2d,
    conv_output_size,
    deform_conv2d_native,
    deform_conv_backend,
    modulated_deform_conv2d,
    modulated_deform_conv2d_op,
)
from pem.ops.prototype import gather_prototypes, mask_bias, masked_similarity, select_prototypes

__all__ = [
    "ModulatedDeformConv2d",
    "conv_output_size",
    "deform_conv2d_native",
    "deform_conv_backend",
    "gather_prototypes",
    "mask_bias",
    "masked_similarity",
    "modulated_deform_conv2d",
    "modulated_deform_conv2d_op",
    "select_prototypes",
]
