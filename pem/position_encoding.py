"""Sine positional encoding (DETR / Mask2Former flavour, normalised)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """Normalised 2-D sine/cosine positional encoding.

    Only the spatial size of the input matters. Channels ``[0, num_pos_feats)`` encode the row,
    ``[num_pos_feats, 2 * num_pos_feats)`` the column; within each half sin/cos alternate.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale
        self.eps = 1e-6

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, C, H, W) -> positional encoding (B, 2 * num_pos_feats, H, W), dtype of ``x``."""
        b, _, h, w = x.shape
        device = x.device
        y_embed = torch.arange(1, h + 1, device=device, dtype=torch.float32)
        x_embed = torch.arange(1, w + 1, device=device, dtype=torch.float32)
        y_embed = y_embed / (y_embed[-1:] + self.eps) * self.scale
        x_embed = x_embed / (x_embed[-1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, device=device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_y = y_embed[:, None] / dim_t  # (H, F)
        pos_x = x_embed[:, None] / dim_t  # (W, F)
        pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
        pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
        f = self.num_pos_feats
        pos = torch.cat(
            (pos_y[:, None, :].expand(h, w, f), pos_x[None, :, :].expand(h, w, f)), dim=2
        ).permute(2, 0, 1)
        return pos.unsqueeze(0).expand(b, -1, -1, -1).to(x.dtype)
