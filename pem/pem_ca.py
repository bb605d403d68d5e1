"""Prototype-based masked cross-attention (PEM-CA).

Not a softmax attention: each query picks, per head, the single most similar pixel token (its
"prototype") among the pixels inside its previous mask, and is updated from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pem.ops.prototype import prototype_gather


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


def masked_similarity(tokens: Tensor, queries: Tensor, mask_logits: Tensor, num_heads: int) -> Tensor:
    """Per-head similarity with masked pixels set to ``-inf``.

    Args:
        tokens: (B, N, C) L2-normalised pixel tokens.
        queries: (B, Q, C) L2-normalised queries.
        mask_logits: (B, Q, N) previous mask logits; a pixel with logit < 0 is excluded.
        num_heads: C is split into this many contiguous heads.

    Returns:
        (B, heads, N, Q) similarities. Exclusion is switched off for an image only when every
        query's mask is empty there (official rule); one empty query keeps an all ``-inf`` column.
    """
    b, n, c = tokens.shape
    q = queries.shape[1]
    d = c // num_heads
    tokens_h = tokens.reshape(b, n, num_heads, d).transpose(1, 2)  # (B, h, N, D)
    queries_h = queries.reshape(b, q, num_heads, d).transpose(1, 2)  # (B, h, Q, D)
    similarity = torch.matmul(tokens_h, queries_h.transpose(2, 3))  # (B, h, N, Q)
    excluded = (mask_logits.detach() < 0).transpose(1, 2)  # (B, N, Q)
    all_excluded = excluded.flatten(1).all(dim=1).reshape(b, 1, 1)
    excluded = excluded & ~all_excluded
    return torch.where(excluded.unsqueeze(1), float("-inf"), similarity)


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
        b, q, c = tgt.shape
        tokens = F.normalize(self.feature_proj(memory + pos), dim=-1)  # (B, N, C)
        queries = F.normalize(self.query_proj(tgt + query_pos), dim=-1)  # (B, Q, C)
        similarity = masked_similarity(tokens, queries, mask_logits.flatten(2), self.num_heads)
        d = c // self.num_heads
        tokens_h = tokens.reshape(b, -1, self.num_heads, d).transpose(1, 2)  # (B, h, N, D)
        prototypes = prototype_gather(similarity, tokens_h)  # (B, h, Q, D)
        prototypes = prototypes.transpose(1, 2).reshape(b, q, c)
        # Normalised over the query axis (dim 1), as the official code does.
        update = F.normalize(self.proj(prototypes * queries), dim=1) * self.alpha + prototypes
        return tgt + self.final(update)
