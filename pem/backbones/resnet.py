"""ResNet-50 in detectron2's module layout (stride in the 3x3 conv, trainable BatchNorm).

Module names reproduce detectron2's state-dict keys exactly, so an official PEM checkpoint's
``backbone.*`` entries load 1:1::

    stem.conv1.weight, stem.conv1.norm.{weight,bias,running_mean,running_var,num_batches_tracked}
    res{2..5}.{j}.conv{1,2,3}.weight, res{2..5}.{j}.conv{1,2,3}.norm.*
    res{2..5}.0.shortcut.weight, res{2..5}.0.shortcut.norm.*

:func:`load_torchvision_resnet50` maps a torchvision-format ImageNet state dict onto this layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicStem", "BottleneckBlock", "ConvNorm", "ResNet", "load_torchvision_resnet50", "resnet50"]


class ConvNorm(nn.Conv2d):
    """A ``Conv2d`` that owns an optional ``norm`` child applied after the convolution.

    Mirrors detectron2's ``Conv2d`` wrapper so that the norm's tensors are named
    ``<conv>.norm.*``. No activation: callers apply ReLU themselves.

    Shapes: ``(B, C_in, H, W) -> (B, C_out, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm: nn.Module | None
        self.register_module("norm", norm)

    def forward(self, x: Tensor) -> Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        return x


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> ConvNorm:
    """Bias-free ``ConvNorm`` with "same" padding for odd kernels and a ``BatchNorm2d``."""
    return ConvNorm(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=False,
        norm=nn.BatchNorm2d(out_channels),
    )


class BasicStem(nn.Module):
    """7x7 stride-2 conv + BN + ReLU, then 3x3 stride-2 max-pool (padding 1).

    Shapes: ``(B, 3, H, W) -> (B, out_channels, H/4, W/4)``.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64) -> None:
        super().__init__()
        self.conv1 = _conv_bn(in_channels, out_channels, 7, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (carries the stride) -> 1x1 bottleneck with a residual connection.

    A 1x1 projection ``shortcut`` (with the block's stride) exists when the input and output
    channel counts differ, i.e. in the first block of every stage.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H/stride, W/stride)``.
    """

    def __init__(
        self, in_channels: int, bottleneck_channels: int, out_channels: int, stride: int = 1
    ) -> None:
        super().__init__()
        self.shortcut: ConvNorm | None
        if in_channels != out_channels:
            self.shortcut = _conv_bn(in_channels, out_channels, 1, stride=stride)
        else:
            self.shortcut = None
        self.conv1 = _conv_bn(in_channels, bottleneck_channels, 1)
        self.conv2 = _conv_bn(bottleneck_channels, bottleneck_channels, 3, stride=stride)
        self.conv3 = _conv_bn(bottleneck_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet with detectron2 names; ``ResNet()`` is ResNet-50.

    Stages ``res2..res5`` have ``depths`` blocks, bottleneck widths ``stem_channels * 2**i`` and
    outputs 4x that; res2 keeps the stem's resolution, each later stage halves it.

    ``forward(x)`` with ``x: (B, 3, H, W)`` returns ``{"res2": (B, 256, H/4, W/4),
    "res3": (B, 512, H/8, W/8), "res4": (B, 1024, H/16, W/16), "res5": (B, 2048, H/32, W/32)}``
    (channels for the default widths).
    """

    out_strides: tuple[int, int, int, int] = (4, 8, 16, 32)

    def __init__(self, depths: tuple[int, int, int, int] = (3, 4, 6, 3), stem_channels: int = 64) -> None:
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"expected 4 stage depths, got {depths}")
        self.stem = BasicStem(3, stem_channels)
        in_channels = stem_channels
        out_channels: list[int] = []
        for i, depth in enumerate(depths):
            width = stem_channels * 2**i
            out = width * 4
            blocks = [
                BottleneckBlock(
                    in_channels if j == 0 else out, width, out, stride=2 if (i > 0 and j == 0) else 1
                )
                for j in range(depth)
            ]
            self.add_module(f"res{i + 2}", nn.Sequential(*blocks))
            in_channels = out
            out_channels.append(out)
        self.out_channels: tuple[int, int, int, int] = tuple(out_channels)  # type: ignore[assignment]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """detectron2 init: convs ``kaiming_normal_(fan_out, relu)`` (c2_msra_fill), BN weight 1, bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.stem(x)
        outs: dict[str, Tensor] = {}
        for name in ("res2", "res3", "res4", "res5"):
            x = getattr(self, name)(x)
            outs[name] = x
        return outs


def resnet50() -> ResNet:
    """detectron2-layout ResNet-50 (3/4/6/3 blocks, outputs 256/512/1024/2048 channels)."""
    return ResNet((3, 4, 6, 3), stem_channels=64)


def _torchvision_to_d2_key(key: str) -> str | None:
    """Rename one torchvision ResNet key to detectron2 layout; ``None`` if it has no counterpart."""
    parts = key.split(".")
    if parts[0] == "conv1":
        return "stem.conv1." + ".".join(parts[1:])
    if parts[0] == "bn1":
        return "stem.conv1.norm." + ".".join(parts[1:])
    if not (parts[0].startswith("layer") and parts[0][5:].isdigit() and len(parts) >= 4):
        return None
    stage = f"res{int(parts[0][5:]) + 1}"
    block, sub, rest = parts[1], parts[2], parts[3:]
    if sub.startswith("conv"):
        return ".".join([stage, block, sub, *rest])
    if sub.startswith("bn") and sub[2:].isdigit():
        return ".".join([stage, block, f"conv{sub[2:]}", "norm", *rest])
    if sub == "downsample" and rest[0] == "0":
        return ".".join([stage, block, "shortcut", *rest[1:]])
    if sub == "downsample" and rest[0] == "1":
        return ".".join([stage, block, "shortcut", "norm", *rest[1:]])
    return None


def load_torchvision_resnet50(model: ResNet, state_dict: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Load a torchvision-format ResNet-50 state dict (e.g. the ImageNet weights) into ``model``.

    Keys ``conv1.weight``, ``bn1.*``, ``layer{1..4}.{j}.conv{1,2,3}.weight``, ``.bn{1,2,3}.*``,
    ``.downsample.{0,1}.*`` are renamed to the detectron2 layout; ``fc.*`` is ignored. Values may
    be tensors or numpy arrays.

    Returns ``(missing, unexpected)``: ``missing`` are ``model`` keys that received no value
    (``num_batches_tracked`` counters are not reported: old torchvision files lack them and they
    carry no weights); ``unexpected`` are source keys that map to nothing (``fc.*`` excluded).
    Raises ``ValueError`` naming the key when a shape does not match.
    """
    own = model.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state_dict.items():
        if key.startswith("fc."):
            continue
        target = _torchvision_to_d2_key(key)
        if target is None or target not in own:
            unexpected.append(key)
            continue
        tensor = torch.as_tensor(value)
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise ValueError(
                f"shape mismatch for {key!r} -> {target!r}: checkpoint {tuple(tensor.shape)}, "
                f"model {tuple(own[target].shape)}"
            )
        mapped[target] = tensor
    model.load_state_dict(mapped, strict=False)
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    return missing, unexpected
