"""Normalisation layers beyond torch's: :class:`FrozenBatchNorm2d` (detectron2's ``FrozenBN``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers (never trained).

    The state-dict keys are ``weight``, ``bias``, ``running_mean``, ``running_var`` (no
    ``num_batches_tracked``), as in detectron2's ``FrozenBatchNorm2d``. The forward is
    ``F.batch_norm`` in inference mode, in training mode too, so the output equals an
    ``nn.BatchNorm2d`` in eval mode bit for bit (and exports to the same ONNX node).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def from_batch_norm(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen copy of ``bn``'s current statistics and affine parameters."""
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats and bn.running_mean is not None:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen.to(bn.weight.device if bn.affine else "cpu")


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`FrozenBatchNorm2d` (in place).

    Returns ``module`` (or the frozen layer when ``module`` itself is a BatchNorm2d).
    """
    if isinstance(module, nn.BatchNorm2d):
        return FrozenBatchNorm2d.from_batch_norm(module)
    for name, child in module.named_children():
        frozen = freeze_batch_norm(child)
        if frozen is not child:
            setattr(module, name, frozen)
    return module
