"""Mask2Former-style baselines written here, for benchmarking PEM against (issue 7).

Not PEM: these reproduce the standard *masked* softmax cross-attention of Mask2Former
(Cheng et al., CVPR 2022, ``CrossAttentionLayer`` + ``MultiScaleMaskedTransformerDecoder``) with
the same widths as PEM's decoder, so the two decoders differ only in the cross-attention layer.

- :class:`MaskedCrossAttentionLayer`: pre-norm ``nn.MultiheadAttention`` from the queries to the
  pixel tokens of one level; query ``tgt + query_pos``, key ``memory + pos``, value ``memory``.
  A pixel whose previous mask logit is < 0 (``sigmoid < 0.5``) is masked out for that query;
  a query whose mask is empty attends everywhere (Mask2Former's per-query rule).
- :class:`SDPAMaskedCrossAttentionLayer`: the same layer (same parameters, an
  ``nn.MultiheadAttention`` holding the projections) computed with
  ``F.scaled_dot_product_attention`` and the boolean mask broadcast over heads, so PyTorch picks
  its fused CPU/GPU kernel; same outputs as :class:`MaskedCrossAttentionLayer` up to rounding.
- :class:`Mask2FormerDecoder`: :class:`pem.transformer_decoder.TransformerDecoder` with every
  PEM-CA layer replaced by one of these layers (``attention="mha"`` or ``"sdpa"``; same
  self-attention, FFN, prediction heads, level cycling and outputs). Untrained: for speed
  comparisons only.

Both take the PEM-CA call signature (memory and positions as (B, C, H, W) maps); flattening to
tokens is a view + transpose, done per layer.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pem.config import TransformerDecoderConfig
from pem.transformer_decoder import TransformerDecoder


def mask2former_attention_mask(mask_logits: Tensor, num_heads: int) -> Tensor:
    """Boolean attention mask of Mask2Former (``True`` = not allowed to attend).

    Args:
        mask_logits: (B, Q, N) previous mask logits at this level.
        num_heads: heads of the attention.

    Returns:
        (B * heads, Q, N) bool; rows of queries with an empty mask are all ``False``.
    """
    masked = mask_logits.detach() < 0  # sigmoid(x) < 0.5
    masked = masked & ~masked.all(dim=-1, keepdim=True)  # empty mask -> attend everywhere
    b, q, n = masked.shape
    return masked.unsqueeze(1).expand(b, num_heads, q, n).reshape(b * num_heads, q, n)


class MaskedCrossAttentionLayer(nn.Module):
    """Mask2Former masked cross-attention, pre-norm, residual included: (B, Q, C) -> (B, Q, C).

    Args:
        dim: channel width C.
        num_heads: attention heads.
    """

    def __init__(self, dim: int = 256, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self, tgt: Tensor, memory: Tensor, mask_logits: Tensor, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        """Update queries by masked attention; arguments and result as in PEM-CA.

        The two layers are interchangeable in the decoder, so their arguments are documented once, at
        :meth:`pem.pem_ca.PEMCrossAttention.forward`.
        """
        value = memory.flatten(2).transpose(1, 2)  # (B, N, C)
        key = value + pos.flatten(2).transpose(1, 2)
        attn_mask = mask2former_attention_mask(mask_logits.flatten(2), self.num_heads)
        x = self.norm(tgt)
        out = self.multihead_attn(x + query_pos, key, value, attn_mask=attn_mask, need_weights=False)[0]
        return tgt + out


def mask2former_allowed(mask_logits: Tensor) -> Tensor:
    """Where Mask2Former lets each query attend (``True`` = allowed), for SDPA's boolean mask.

    Args:
        mask_logits: (B, Q, N) previous mask logits at this level.

    Returns:
        (B, 1, Q, N) bool (broadcast over heads); a query with an empty mask attends everywhere.
    """
    allowed = ~(mask_logits.detach() < 0)
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)  # empty mask -> attend everywhere
    return allowed.unsqueeze(1)


class SDPAMaskedCrossAttentionLayer(MaskedCrossAttentionLayer):
    """:class:`MaskedCrossAttentionLayer` computed with ``F.scaled_dot_product_attention``.

    Same parameters (state dicts are interchangeable) and the same result up to rounding; the
    projections are the ``nn.MultiheadAttention`` in-projection split in three, the attention is
    SDPA with the (B, 1, Q, N) boolean mask (no per-head copy of the mask).
    """

    def forward(
        self, tgt: Tensor, memory: Tensor, mask_logits: Tensor, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        """Same arguments as :meth:`MaskedCrossAttentionLayer.forward`."""
        attn = self.multihead_attn
        b, q, c = tgt.shape
        h, d = self.num_heads, c // self.num_heads
        value = memory.flatten(2).transpose(1, 2)  # (B, N, C)
        key = value + pos.flatten(2).transpose(1, 2)
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
        x = self.norm(tgt)
        qh = F.linear(x + query_pos, w_q, b_q).view(b, q, h, d).transpose(1, 2)  # (B, h, Q, D)
        kh = F.linear(key, w_k, b_k).view(b, -1, h, d).transpose(1, 2)  # (B, h, N, D)
        vh = F.linear(value, w_v, b_v).view(b, -1, h, d).transpose(1, 2)
        allowed = mask2former_allowed(mask_logits.flatten(2))
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed)  # (B, h, Q, D)
        return tgt + attn.out_proj(out.transpose(1, 2).reshape(b, q, c))


ATTENTION_LAYERS: dict[str, type[MaskedCrossAttentionLayer]] = {
    "mha": MaskedCrossAttentionLayer,
    "sdpa": SDPAMaskedCrossAttentionLayer,
}


class Mask2FormerDecoder(TransformerDecoder):
    """PEM's transformer decoder with Mask2Former's masked cross-attention instead of PEM-CA.

    Same constructor and outputs as :class:`pem.transformer_decoder.TransformerDecoder`, plus
    ``attention``: ``"mha"`` (``nn.MultiheadAttention``) or ``"sdpa"``
    (``F.scaled_dot_product_attention``) for the masked cross-attention.
    """

    def __init__(
        self,
        in_channels: int,
        mask_dim: int,
        num_classes: int,
        cfg: TransformerDecoderConfig,
        attention: str = "mha",
    ):
        super().__init__(in_channels, mask_dim, num_classes, cfg)
        if attention not in ATTENTION_LAYERS:
            raise ValueError(f"attention={attention!r}: choose from {', '.join(ATTENTION_LAYERS)}")
        layer = ATTENTION_LAYERS[attention]
        self.transformer_cross_attention_layers = nn.ModuleList(
            layer(cfg.hidden_dim, cfg.num_heads) for _ in range(cfg.num_layers)
        )
