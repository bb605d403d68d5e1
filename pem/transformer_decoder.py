"""PEM transformer decoder: PEM-CA -> self-attention -> FFN per layer, with deep supervision.

Names follow the official ``MultiScaleMaskedTransformerDecoder`` so checkpoints load by name.
Internally tensors are batch-first (B, Q, C); ``nn.MultiheadAttention`` weights are layout-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from pem.config import TransformerDecoderConfig
from pem.pem_ca import PEMCrossAttention
from pem.position_encoding import PositionEmbeddingSine


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform initialisation of ``module``'s matrices (biases and norms keep theirs)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Pre-norm self-attention with residual: (B, Q, C) -> (B, Q, C)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        xavier_init(self)

    def forward(self, tgt: Tensor, query_pos: Tensor) -> Tensor:
        x = self.norm(tgt)
        qk = x + query_pos
        return tgt + self.self_attn(qk, qk, x, need_weights=False)[0]


class FFNLayer(nn.Module):
    """Pre-norm feed-forward with residual: (B, Q, C) -> (B, Q, C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        xavier_init(self)

    def forward(self, tgt: Tensor) -> Tensor:
        return tgt + self.linear2(F.relu(self.linear1(self.norm(tgt))))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU in between: (..., C_in) -> (..., C_out)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        outs = [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class QueryDecoder(nn.Module):
    """What PEM's and Mask2Former's decoders share: per-layer cross-attention -> self-attention ->
    FFN over learned queries, and the class / mask prediction heads of every layer.

    Subclasses call :meth:`_build_layers` then :meth:`_build_heads` (registration order fixes the
    parameters' initialisation order and the checkpoint names).
    """

    def _build_layers(
        self,
        cfg: TransformerDecoderConfig,
        num_feature_levels: int,
        layers: tuple[Callable[[], nn.Module], Callable[[], nn.Module], Callable[[], nn.Module]],
    ) -> None:
        """``layers``: factories of one cross-attention, self-attention and FFN layer."""
        cross, self_attention, ffn = layers
        dim = cfg.hidden_dim
        self.num_layers = cfg.num_layers
        self.num_feature_levels = num_feature_levels
        self.pe_layer = PositionEmbeddingSine(dim // 2)
        self.transformer_cross_attention_layers = nn.ModuleList(cross() for _ in range(cfg.num_layers))
        self.transformer_self_attention_layers = nn.ModuleList(
            self_attention() for _ in range(cfg.num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(ffn() for _ in range(cfg.num_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(cfg.num_queries, dim)
        self.query_embed = nn.Embedding(cfg.num_queries, dim)
        self.level_embed = nn.Embedding(num_feature_levels, dim)

    def _build_heads(self, dim: int, num_classes: int, mask_dim: int) -> None:
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)

    def initial_queries(self, batch: int) -> tuple[Tensor, Tensor]:
        """The learned query positions and query features, (B, Q, C) each."""
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        return query_pos, self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)

    def class_and_mask_logits(self, tgt: Tensor, mask_features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, Q, C) -> class logits (B, Q, K+1) and mask logits (B, Q, H/4, W/4)."""
        decoded = self.decoder_norm(tgt)
        class_logits = self.class_embed(decoded)
        mask_logits = (self.mask_embed(decoded) @ mask_features.flatten(2)).unflatten(
            2, mask_features.shape[2:]
        )
        return class_logits, mask_logits

    @staticmethod
    def outputs(predictions: list[tuple[Tensor, Tensor]]) -> dict[str, object]:
        """The last layer's (class, mask) logits, and the earlier ones as ``aux_outputs``."""
        return {
            "pred_logits": predictions[-1][0],
            "pred_masks": predictions[-1][1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in predictions[:-1]],
        }


class TransformerDecoder(QueryDecoder):
    """Query decoder over the pixel decoder's multi-scale features.

    Args:
        in_channels: channels of the multi-scale features (pixel decoder ``conv_dim``).
        mask_dim: channels of ``mask_features``.
        num_classes: K (the classifier has K + 1 outputs, the last is "no object").
        cfg: widths, heads, queries, layers.
    """

    def __init__(self, in_channels: int, mask_dim: int, num_classes: int, cfg: TransformerDecoderConfig):
        super().__init__()
        dim = cfg.hidden_dim
        self._build_layers(
            cfg,
            cfg.num_feature_levels,
            (
                lambda: PEMCrossAttention(dim, cfg.num_heads),
                lambda: SelfAttentionLayer(dim, cfg.num_heads),
                lambda: FFNLayer(dim, cfg.dim_feedforward),
            ),
        )
        self.input_proj = nn.ModuleList(
            nn.Conv2d(in_channels, dim, kernel_size=1) for _ in range(cfg.num_feature_levels)
        )
        for proj in self.input_proj:
            nn.init.kaiming_uniform_(proj.weight, a=1)  # detectron2 c2_xavier_fill
            nn.init.zeros_(proj.bias)
        self._build_heads(dim, num_classes, mask_dim)

    def forward_prediction_heads(
        self, tgt: Tensor, mask_features: Tensor, attn_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(B, Q, C) queries -> class logits (B, Q, K+1), mask logits (B, Q, H/4, W/4) and the
        mask logits resized to ``attn_size`` for the next layer's prototype selection."""
        class_logits, mask_logits = self.class_and_mask_logits(tgt, mask_features)
        attn_mask = F.interpolate(mask_logits, size=attn_size, mode="bilinear", align_corners=False)
        return class_logits, mask_logits, attn_mask

    def forward(self, multi_scale: list[Tensor], mask_features: Tensor) -> dict[str, object]:
        """Decode.

        Args:
            multi_scale: ``[x32, x16, x8]`` pixel-decoder features, each (B, C_in, h_l, w_l).
            mask_features: (B, mask_dim, H/4, W/4).

        Returns:
            ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, H/4, W/4) of the last layer and
            ``aux_outputs``: the ``num_layers`` earlier predictions (deep supervision).
        """
        sources, positions, sizes = [], [], []
        for level in range(self.num_feature_levels):
            feature = multi_scale[level]
            sizes.append((feature.shape[-2], feature.shape[-1]))
            positions.append(self.pe_layer(feature))
            sources.append(
                self.input_proj[level](feature) + self.level_embed.weight[level][None, :, None, None]
            )
        query_pos, tgt = self.initial_queries(mask_features.shape[0])
        class_logits, mask_logits, attn_mask = self.forward_prediction_heads(tgt, mask_features, sizes[0])
        predictions = [(class_logits, mask_logits)]
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            tgt = self.transformer_cross_attention_layers[i](
                tgt, sources[level], attn_mask, positions[level], query_pos
            )
            tgt = self.transformer_self_attention_layers[i](tgt, query_pos)
            tgt = self.transformer_ffn_layers[i](tgt)
            next_size = sizes[(i + 1) % self.num_feature_levels]
            class_logits, mask_logits, attn_mask = self.forward_prediction_heads(
                tgt, mask_features, next_size
            )
            predictions.append((class_logits, mask_logits))
        return self.outputs(predictions)
