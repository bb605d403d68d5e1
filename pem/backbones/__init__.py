"""Backbones: detectron2-layout ResNet-50 and STDCNet, each returning ``{"res2".."res5"}`` features.

Every backbone exposes ``out_channels`` (channels of res2..res5) and ``out_strides`` (4, 8, 16, 32).
"""

from __future__ import annotations

from torch import nn

from pem.backbones.resnet import (
    BasicStem,
    BottleneckBlock,
    ConvNorm,
    ResNet,
    load_torchvision_resnet50,
    resnet50,
)
from pem.backbones.stdc import CatBottleneck, ConvX, STDCNet, load_stdc_pretrained, stdc1, stdc2
from pem.config import BackboneConfig
from pem.norm import freeze_batch_norm

__all__ = [
    "BasicStem",
    "BottleneckBlock",
    "CatBottleneck",
    "ConvNorm",
    "ConvX",
    "ResNet",
    "STDCNet",
    "build_backbone",
    "load_stdc_pretrained",
    "load_torchvision_resnet50",
    "resnet50",
    "stdc1",
    "stdc2",
]


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """Build the backbone described by ``cfg``; its ``out_channels`` equals ``cfg.out_channels``.

    ``forward(x: (B, 3, H, W))`` returns ``{"res2", "res3", "res4", "res5"}`` at strides 4..32.
    ``cfg.norm == "FrozenBN"`` replaces the BatchNorm layers by :class:`pem.norm.FrozenBatchNorm2d`
    (``"SyncBN"`` is plain BatchNorm here; the trainer converts it when it runs distributed).
    """
    if cfg.name == "resnet50":
        backbone: nn.Module = resnet50()
    elif cfg.name == "stdc":
        backbone = STDCNet(base=cfg.stdc_base, layers=cfg.stdc_layers, block_num=cfg.stdc_block_num)
    else:
        raise ValueError(f"unknown backbone {cfg.name!r}; expected 'resnet50' or 'stdc'")
    if cfg.norm == "FrozenBN":
        freeze_batch_norm(backbone)
    return backbone
