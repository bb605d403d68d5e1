"""Prototype-based masked cross-attention (PEM-CA).

Not a softmax attention: each query picks, per head, the single most similar pixel token (its
"prototype") among the pixels inside its previous mask, and is updated from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pem.ops.prototype import gather_prototypes, masked_similarity, select_prototypes

__all__ = ["LocalRepresentation", "PEMCrossAttention", "masked_similarity"]


class LocalRepresentation(nn.Module):
    """Pixel-token projection: BN -> depth-wise 3x3 conv -> flatten -> Linear.

    (B, C, H, W) -> (B, H*W, C), tokens in row-major order.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(dim)
        self.to_query_3x3 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=True)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.to_query_3x3(self.bn(x))
        return self.out(x.flatten(2).transpose(1, 2))


class PEMCrossAttention(nn.Module):
    """One PEM-CA block (official name ``PEM_CA``), residual included.

    Args:
        dim: channel width C.
        num_heads: heads for prototype selection (C must be divisible by it).
    """

    def __init__(self, dim: int = 256, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.feature_proj = LocalRepresentation(dim)
        self.query_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.proj = nn.Linear(dim, dim)
        self.final = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))

    def forward(
        self, tgt: Tensor, memory: Tensor, mask_logits: Tensor, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        """Update queries from their prototypes.

        Args:
            tgt: (B, Q, C) queries.
            memory: (B, C, H, W) pixel features of one level.
            mask_logits: (B, Q, H, W) previous mask logits resized to this level.
            pos: (B, C, H, W) positional encoding of the level.
            query_pos: (B, Q, C) query positional embedding.

        Returns:
            (B, Q, C) updated queries.
        """
        tokens = F.normalize(self.feature_proj(memory + pos), dim=-1)  # (B, N, C)
        queries = F.normalize(self.query_proj(tgt + query_pos), dim=-1)  # (B, Q, C)
        index = select_prototypes(tokens, queries, mask_logits.flatten(2), self.num_heads)  # (B, h, Q)
        prototypes = gather_prototypes(tokens, index)  # (B, Q, C)
        # Normalised over the query axis (dim 1), as the official code does.
        update = F.normalize(self.proj(prototypes * queries), dim=1) * self.alpha + prototypes
        return tgt + self.final(update)
