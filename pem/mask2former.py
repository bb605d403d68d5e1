"""A faithful Mask2Former (Cheng et al., CVPR 2022), benchmark-only, to measure PEM against (issue 24).

Written from the official code's shapes (facebookresearch/Mask2Former: ``msdeformattn.py``,
``ops/functions/ms_deform_attn_func.py``'s PyTorch reference, ``mask2former_transformer_decoder.py``,
``configs/cityscapes/*/maskformer2_R50_bs16_90k.yaml``):

- backbone: our detectron2-layout ResNet-50 (:func:`pem.backbones.build_backbone`);
- pixel decoder (:class:`MSDeformAttnPixelDecoder`): 1x1 conv + GroupNorm(32) input projections of
  res5, res4, res3 to 256 channels, a 6-layer multi-scale deformable-attention encoder over the three
  levels (8 heads, 4 points, FFN 1024, post-norm), then one FPN level for res2 (1x1 lateral +
  GN, 3x3 output conv + GN + ReLU) and a 1x1 ``mask_features`` conv;
- transformer decoder (:class:`MaskedAttentionDecoder`): 100 queries, 256-d, 8 heads, FFN 2048,
  9 layers of masked cross-attention -> self-attention -> FFN, each *post*-norm
  (``PRE_NORM: False`` in the Cityscapes configs), prediction heads before the first layer and after
  every layer, the level cycling 1/32, 1/16, 1/8; no input projection (256 in, 256 hidden);
- inference: Mask2Former's semantic and panoptic post-processing, which PEM shares
  (:mod:`pem.inference`); the model is a :class:`pem.model.PEM` with this head, so
  ``predict_semantic`` / ``predict_panoptic`` and the export wrappers (:mod:`export.heads`) apply.

Multi-scale deformable attention is computed with ``F.grid_sample`` (bilinear, zero padding,
``align_corners=False``, exactly the official PyTorch reference), so it exports to the ONNX
``GridSample`` operator that onnxruntime and TensorRT run; the CUDA kernel of the official code is
only a faster route to the same numbers.

Untrained (random weights): for speed and cost comparisons only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pem.config import PEMConfig, TransformerDecoderConfig
from pem.position_encoding import PositionEmbeddingSine
from pem.transformer_decoder import FFNLayer, QueryDecoder, SelfAttentionLayer, xavier_init

#: The Cityscapes R50 configuration of the official code (``maskformer2_R50_bs16_90k.yaml``).
MASK2FORMER_R50 = {
    "conv_dim": 256,
    "mask_dim": 256,
    "encoder_layers": 6,
    "encoder_heads": 8,
    "encoder_points": 4,
    "encoder_ffn": 1024,
    "num_levels": 3,
    "decoder": TransformerDecoderConfig(
        hidden_dim=256, num_queries=100, num_heads=8, dim_feedforward=2048, num_layers=9
    ),
}


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR), through ``grid_sample``.

    Args:
        dim: model width C.
        num_levels: feature levels L.
        num_heads: heads H (C divisible by H).
        num_points: sampling points P per head and level.
    """

    def __init__(self, dim: int = 256, num_levels: int = 3, num_heads: int = 8, num_points: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_levels, self.num_heads, self.num_points = num_levels, num_heads, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Deformable DETR's init: offsets start on a ring of directions, one per head, growing per point.
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def project(self, query: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The per-head value tokens (B, N, H, D), sampling offsets in pixels (B, Nq, H, L, P, 2)
        and attention weights, softmaxed over each head's L * P points (B, Nq, H, L * P)."""
        b, nq, c = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value).view(b, -1, heads, c // heads)
        offsets = self.sampling_offsets(query).view(b, nq, heads, levels, points, 2)
        weights = self.attention_weights(query).view(b, nq, heads, levels * points).softmax(-1)
        return value, offsets, weights

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """Attend from each query to P points per level around its reference point.

        Args:
            query: (B, Nq, C) queries (with positional encoding added).
            reference_points: (B, Nq, L, 2) normalised (x, y) in [0, 1] per level.
            value: (B, N, C) the L levels' tokens concatenated (row-major per level).
            spatial_shapes: (h, w) of each level, in the order of ``value``.

        Returns:
            (B, Nq, C).
        """
        b, nq, c = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        d = c // heads
        value, offsets, weights = self.project(query, value)
        sampled = []
        start = 0
        for level, (h, w) in enumerate(spatial_shapes):
            # (B, hw, H, D) -> (B*H, D, h, w): one grid_sample per level over all heads.
            level_value = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(b * heads, d, h, w)
            start += h * w
            scale = offsets.new_tensor([1.0 / w, 1.0 / h])
            location = reference_points[:, :, None, level, None, :] + offsets[:, :, :, level] * scale
            grid = (2.0 * location - 1.0).transpose(1, 2).reshape(b * heads, nq, points, 2)
            sampled.append(
                F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            )  # (B*H, D, Nq, P)
        stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*H, D, Nq, L*P)
        weights = weights.transpose(1, 2).reshape(b * heads, 1, nq, levels * points)
        out = (stacked * weights).sum(-1).view(b, heads * d, nq).transpose(1, 2)
        return self.output_proj(out)


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention + FFN, (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, ffn_dim: int, num_levels: int, num_heads: int, num_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


def encoder_reference_points(
    spatial_shapes: list[tuple[int, int]], batch: int, device: torch.device
) -> Tensor:
    """Pixel centres of every level, normalised to [0, 1], as (B, N, L, 2) (x, y); no padding."""
    points = []
    for h, w in spatial_shapes:
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, device=device) / h,
            torch.linspace(0.5, w - 0.5, w, device=device) / w,
            indexing="ij",
        )
        points.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
    ref = torch.cat(points, 0)  # (N, 2)
    return ref[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)


def _conv_gn(in_channels: int, out_channels: int, kernel_size: int, relu: bool) -> nn.Sequential:
    """detectron2's ``Conv2d(norm=GroupNorm(32))`` (+ ReLU), no bias, c2_xavier_fill."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    layers: list[nn.Module] = [conv, nn.GroupNorm(32, out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder: deformable encoder over res3..res5, FPN for res2.

    Input: backbone features ``res2..res5`` (strides 4..32). Output: ``mask_features``
    (B, mask_dim, H/4, W/4) and the multi-scale list ``[x32, x16, x8]`` (B, conv_dim, h, w).
    """

    def __init__(
        self,
        in_channels: tuple[int, int, int, int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
    ):
        super().__init__()
        self.num_levels = 3
        # input_proj[0] projects res5, [1] res4, [2] res3 (the official order).
        self.input_proj = nn.ModuleList()
        for channels in reversed(in_channels[1:]):
            conv = nn.Conv2d(channels, conv_dim, kernel_size=1)
            nn.init.xavier_uniform_(conv.weight, gain=1)
            nn.init.zeros_(conv.bias)
            self.input_proj.append(nn.Sequential(conv, nn.GroupNorm(32, conv_dim)))
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)
        self.level_embed = nn.Parameter(torch.empty(self.num_levels, conv_dim))
        nn.init.normal_(self.level_embed)
        self.encoder_layers = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, ffn_dim, self.num_levels, num_heads, num_points)
            for _ in range(num_layers)
        )
        self.lateral_conv = _conv_gn(in_channels[0], conv_dim, 1, relu=False)
        self.output_conv = _conv_gn(conv_dim, conv_dim, 3, relu=True)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """features ``{res2..res5}`` -> (mask_features, [x32, x16, x8])."""
        srcs, positions, shapes = [], [], []
        for level, name in enumerate(("res5", "res4", "res3")):
            x = features[name]
            src = self.input_proj[level](x)
            shapes.append((int(src.shape[-2]), int(src.shape[-1])))
            srcs.append(src.flatten(2).transpose(1, 2))
            pos = self.pe_layer(src).flatten(2).transpose(1, 2)
            positions.append(pos + self.level_embed[level].view(1, 1, -1))
        src = torch.cat(srcs, 1)  # (B, N, C)
        pos = torch.cat(positions, 1)
        reference_points = encoder_reference_points(shapes, src.shape[0], src.device).to(src.dtype)
        for layer in self.encoder_layers:
            src = layer(src, pos, reference_points, shapes)
        b, _, c = src.shape
        multi_scale = []
        for tokens, (h, w) in zip(src.split([h * w for h, w in shapes], dim=1), shapes):
            multi_scale.append(tokens.transpose(1, 2).reshape(b, c, h, w))
        lateral = self.lateral_conv(features["res2"])
        up = F.interpolate(multi_scale[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.output_conv(lateral + up)
        return self.mask_features(y), multi_scale


class PostNormCrossAttention(nn.Module):
    """Masked cross-attention, post-norm: ``norm(tgt + MHA(tgt + qpos, mem + pos, mem, mask))``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        xavier_init(self)

    def forward(
        self, tgt: Tensor, memory: Tensor, attn_mask: Tensor, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        """tgt, query_pos (B, Q, C); memory, pos (B, N, C); attn_mask (B*heads, Q, N) bool."""
        out = self.multihead_attn(
            tgt + query_pos, memory + pos, memory, attn_mask=attn_mask, need_weights=False
        )
        return self.norm(tgt + out[0])


class PostNormSelfAttention(SelfAttentionLayer):
    """Query self-attention, post-norm: ``norm(tgt + MHA(tgt + qpos, tgt + qpos, tgt))`` (the
    pre-norm layer's parameters, applied in the other order)."""

    def forward(self, tgt: Tensor, query_pos: Tensor) -> Tensor:
        qk = tgt + query_pos
        return self.norm(tgt + self.self_attn(qk, qk, tgt, need_weights=False)[0])


class PostNormFFN(FFNLayer):
    """Feed-forward, post-norm: ``norm(tgt + linear2(relu(linear1(tgt))))`` (the pre-norm layer's
    parameters, applied in the other order)."""

    def forward(self, tgt: Tensor) -> Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


def masked_attention_mask(mask_logits: Tensor, size: tuple[int, int], num_heads: int) -> Tensor:
    """Mask2Former's attention mask for the next layer (``True`` = may not attend).

    ``mask_logits`` (B, Q, h, w) are resized to ``size``; a pixel is masked where ``sigmoid < 0.5``;
    a query whose mask is empty attends everywhere. Returns (B * heads, Q, size[0] * size[1]).
    """
    resized = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    masked = resized.flatten(2).detach() < 0  # sigmoid(x) < 0.5
    masked = masked & ~masked.all(dim=-1, keepdim=True)
    b, q, n = masked.shape
    return masked.unsqueeze(1).expand(b, num_heads, q, n).reshape(b * num_heads, q, n)


class MaskedAttentionDecoder(QueryDecoder):
    """Mask2Former's ``MultiScaleMaskedTransformerDecoder`` (post-norm, no input projection).

    Args:
        in_channels: channels of the multi-scale features (must equal ``cfg.hidden_dim``, as in
            every official config: the official code then uses no input projection).
        mask_dim: channels of ``mask_features``.
        num_classes: K (K + 1 class logits, the last "no object").
        cfg: widths, heads, queries and layers.
    """

    def __init__(self, in_channels: int, mask_dim: int, num_classes: int, cfg: TransformerDecoderConfig):
        super().__init__()
        dim = cfg.hidden_dim
        if in_channels != dim:
            raise ValueError(f"in_channels {in_channels} != hidden_dim {dim}: Mask2Former projects nothing")
        self.num_heads = cfg.num_heads
        self._build_layers(
            cfg,
            3,
            (
                lambda: PostNormCrossAttention(dim, cfg.num_heads),
                lambda: PostNormSelfAttention(dim, cfg.num_heads),
                lambda: PostNormFFN(dim, cfg.dim_feedforward),
            ),
        )
        self._build_heads(dim, num_classes, mask_dim)

    def forward(self, multi_scale: list[Tensor], mask_features: Tensor) -> dict[str, object]:
        """Same inputs and outputs as :meth:`pem.transformer_decoder.TransformerDecoder.forward`."""
        sources, positions, sizes = [], [], []
        for level in range(self.num_feature_levels):
            feature = multi_scale[level]
            sizes.append((int(feature.shape[-2]), int(feature.shape[-1])))
            positions.append(self.pe_layer(feature).flatten(2).transpose(1, 2))
            embed = self.level_embed.weight[level].view(1, 1, -1)
            sources.append(feature.flatten(2).transpose(1, 2) + embed)
        query_pos, tgt = self.initial_queries(mask_features.shape[0])
        predictions: list[tuple[Tensor, Tensor]] = [self.class_and_mask_logits(tgt, mask_features)]
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            attn_mask = masked_attention_mask(predictions[-1][1], sizes[level], self.num_heads)
            tgt = self.transformer_cross_attention_layers[i](
                tgt, sources[level], attn_mask, positions[level], query_pos
            )
            tgt = self.transformer_self_attention_layers[i](tgt, query_pos)
            tgt = self.transformer_ffn_layers[i](tgt)
            predictions.append(self.class_and_mask_logits(tgt, mask_features))
        return self.outputs(predictions)


class Mask2FormerHead(nn.Module):
    """Pixel decoder + transformer decoder (official name ``sem_seg_head``)."""

    def __init__(self, cfg: PEMConfig):
        super().__init__()
        m2f = MASK2FORMER_R50
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            cfg.backbone.out_channels,
            m2f["conv_dim"],
            m2f["mask_dim"],
            m2f["encoder_layers"],
            m2f["encoder_heads"],
            m2f["encoder_points"],
            m2f["encoder_ffn"],
        )
        self.predictor = MaskedAttentionDecoder(
            m2f["conv_dim"], m2f["mask_dim"], cfg.num_classes, m2f["decoder"]
        )

    def forward(self, features: dict[str, Tensor]) -> dict[str, object]:
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features)


def build_mask2former(cfg: PEMConfig) -> nn.Module:
    """Mask2Former with ``cfg``'s backbone, classes, input size and inference thresholds.

    Returns a :class:`pem.model.PEM` whose ``sem_seg_head`` is :class:`Mask2FormerHead`, so the
    normalisation, padding, semantic / panoptic inference and export wrappers are PEM's (they are
    Mask2Former's own post-processing).
    """
    from pem.model import PEM

    return PEM(cfg, head=Mask2FormerHead(cfg))
