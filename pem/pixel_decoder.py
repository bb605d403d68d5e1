"""PEM's efficient multi-scale pixel decoder: context-based self-modulation + deformable layers.

Module and parameter names follow the official implementation so that its checkpoints load by
name (``in_projections``, ``conv_avg``, ``csm``, ``dcn``, ``out``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pem.ops.deform_conv import ModulatedDeformConv2d


class ConvBNReLU(nn.Sequential):
    """1x1 conv (no bias) -> BatchNorm -> ReLU: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, a=1)


class ChannelMLP(nn.Module):
    """Bottleneck of two 1x1 convs: (B, C, 1, 1) -> (B, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        hidden = channels // reduction
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class CSM(nn.Module):
    """Context-based self-modulation: ``x + x * sigmoid(sigmoid(MLP(GAP(x))))``, shape-preserving.

    The sigmoid is applied twice, as in the official code (an ``nn.Sigmoid`` inside ``mlp`` and
    another in ``forward``); trained checkpoints depend on it.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(ChannelMLP(channels), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        gain = self.mlp(x.mean(dim=(2, 3), keepdim=True)).sigmoid()
        return x + x * gain


def _bilinear_kernel(size: int) -> Tensor:
    """(size, size) bilinear upsampling kernel."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    return filt[:, None] * filt[None, :]


class DeformLayer(nn.Module):
    """Modulated deformable 3x3 conv + BN + ReLU, then a learned 2x upsampling.

    Offsets and the modulation mask come from a plain 3x3 conv with 27 output channels (zero
    initialised): channels 0..17 are interleaved (dy, dx) per tap, channels 18..26 the mask logits.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.dcn_offset = nn.Conv2d(in_channels, 27, kernel_size=3, padding=1, bias=True)
        self.dcn = ModulatedDeformConv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.dcn_bn = nn.BatchNorm2d(out_channels)
        self.up_sample = nn.ConvTranspose2d(
            out_channels, out_channels, kernel_size=4, stride=2, padding=1, output_padding=0, bias=False
        )
        self.up_bn = nn.BatchNorm2d(out_channels)
        nn.init.zeros_(self.dcn_offset.weight)
        nn.init.zeros_(self.dcn_offset.bias)
        with torch.no_grad():
            self.up_sample.weight[:, 0] = _bilinear_kernel(4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> (x_out (B, C', H, W), x_up (B, C', 2H, 2W))."""
        offset_mask = self.dcn_offset(x)
        offset, mask_logits = offset_mask.split((18, 9), dim=1)
        # The deformable conv runs in its weight's dtype (fp32 under AMP), like the official code.
        dtype = self.dcn.weight.dtype
        x = self.dcn(x.to(dtype), offset.to(dtype), mask_logits.sigmoid().to(dtype))
        x = F.relu(self.dcn_bn(x))
        x_up = F.relu(self.up_bn(self.up_sample(x)))
        return x, x_up


class PixelDecoder(nn.Module):
    """Top-down multi-scale pixel decoder.

    Input: backbone features ``res2..res5`` at strides 4, 8, 16, 32.
    Output: ``mask_features`` (B, mask_dim, H/4, W/4) and the multi-scale list
    ``[x32, x16, x8]`` (each (B, conv_dim, H/s, W/s)) for the transformer decoder.
    """

    in_features = ("res2", "res3", "res4", "res5")

    def __init__(self, in_channels: tuple[int, int, int, int], conv_dim: int = 128, mask_dim: int = 256):
        super().__init__()
        self.in_projections = nn.ModuleList(ConvBNReLU(c, conv_dim) for c in in_channels)
        self.conv_avg = ConvBNReLU(in_channels[-1], conv_dim)
        # csm[0] acts at stride 32 ... csm[3] at stride 4; dcn[0] at stride 32 ... dcn[2] at stride 8.
        self.csm = nn.ModuleList(CSM(conv_dim) for _ in range(4))
        self.dcn = nn.ModuleList(DeformLayer(conv_dim, conv_dim) for _ in range(3))
        self.out = ConvBNReLU(conv_dim, mask_dim)

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """features ``{res2..res5}`` -> (mask_features (B, mask_dim, H/4, W/4), [x32, x16, x8])."""
        projected = [proj(features[name]) for proj, name in zip(self.in_projections, self.in_features)]
        res5 = features["res5"]
        context = self.conv_avg(res5.mean(dim=(2, 3), keepdim=True))
        multi_scale: list[Tensor] = []
        y = self.csm[0](projected[3]) + context
        for level in range(3):
            x, up = self.dcn[level](y)
            multi_scale.append(x)
            y = self.csm[level + 1](projected[2 - level]) + up
        return self.out(y), multi_scale
