"""The prototype gather of PEM-CA: per (image, head, query), pick the most similar pixel token.

It is a custom op (``pem::prototype_gather``) so that the exporter can give it its own symbolic
(ArgMax + GatherElements) instead of whatever the tracer would make of it. The eager
implementation is argmax + gather only: no boolean indexing, nothing data-dependent in shape.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _gather_index(similarity: Tensor, head_dim: int) -> Tensor:
    """(B, h, N, Q) similarity -> (B, h, Q, D) int64 gather index of the argmax token."""
    idx = similarity.argmax(dim=2)  # (B, h, Q)
    return idx.unsqueeze(-1).expand(-1, -1, -1, head_dim)


def prototype_gather_reference(similarity: Tensor, features: Tensor) -> Tensor:
    """Plain PyTorch version of :func:`prototype_gather` (differentiable w.r.t. ``features``)."""
    return torch.gather(features, 2, _gather_index(similarity, features.shape[-1]))


@torch.library.custom_op("pem::prototype_gather", mutates_args=())
def _prototype_gather_op(similarity: Tensor, features: Tensor) -> Tensor:
    return torch.gather(features, 2, _gather_index(similarity, features.shape[-1]))


@_prototype_gather_op.register_fake
def _(similarity: Tensor, features: Tensor) -> Tensor:
    b, h, _, q = similarity.shape
    return features.new_empty((b, h, q, features.shape[-1]))


def _setup_context(ctx, inputs, output) -> None:
    similarity, features = inputs
    ctx.save_for_backward(_gather_index(similarity, features.shape[-1]))
    ctx.num_tokens = features.shape[2]


def _backward(ctx, grad_output: Tensor):
    (index,) = ctx.saved_tensors
    b, h, _, d = index.shape
    grad_features = grad_output.new_zeros((b, h, ctx.num_tokens, d))
    grad_features.scatter_add_(2, index, grad_output)
    # The selection itself is not differentiable: no gradient flows into the similarity.
    return None, grad_features


_prototype_gather_op.register_autograd(_backward, setup_context=_setup_context)


def prototype_gather(similarity: Tensor, features: Tensor) -> Tensor:
    """Gather, per head and query, the token with the highest similarity.

    Args:
        similarity: (B, h, N, Q) masked similarities (masked entries are ``-inf``; an all ``-inf``
            column selects token 0, like the official code).
        features: (B, h, N, D) per-head token features.

    Returns:
        (B, h, Q, D) prototypes.
    """
    if similarity.dim() != 4 or features.dim() != 4:
        raise ValueError(
            f"prototype_gather expects 4-D tensors, got {tuple(similarity.shape)} and {tuple(features.shape)}"
        )
    if similarity.shape[:3] != features.shape[:3]:
        raise ValueError(
            f"similarity {tuple(similarity.shape)} and features {tuple(features.shape)} disagree on (B, h, N)"
        )
    return _prototype_gather_op(similarity, features)
