"""STDCNet backbone ("cat" bottlenecks) with the official PEM / STDC-Seg module tree.

``features`` is a flat ``Sequential``: two stride-2 :class:`ConvX` stem layers, then the
:class:`CatBottleneck` blocks of three stages (the first block of each stage has stride 2).
As in the official code the same modules are registered a second time as the stage
containers ``x2, x4, x8, x16, x32``, each a ``Sequential`` wrapping a ``Sequential`` slice of
``features`` that keeps the original indices. The state dict therefore holds every backbone
tensor twice (``features.{i}.*`` and ``x{s}.0.{i}.*``, same storage), e.g. for STDC1::

    features.2.conv_list.0.conv.weight  ==  x8.0.2.conv_list.0.conv.weight

``parameters()`` / ``modules()`` de-duplicate; ``state_dict()`` does not, and
``load_state_dict()`` simply writes the shared tensor once per copy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CatBottleneck", "ConvX", "STDCNet", "load_stdc_pretrained", "stdc1", "stdc2"]

# Top-level modules of the STDC-Seg ImageNet classifier that the segmentation backbone drops.
_IGNORED_PREFIXES = ("fc.", "bn.", "linear.", "conv_last.")
_STAGE_NAMES = ("x2", "x4", "x8", "x16", "x32")


class ConvX(nn.Module):
    """Conv (no bias, padding ``kernel // 2``) + BatchNorm2d + ReLU.

    Shapes: ``(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


def _branch_channels(out_channels: int, block_num: int) -> list[int]:
    """Output channels of the ``block_num`` branches; they sum to ``out_channels``.

    ``[out/2, out/4, ..., out/2**(n-1), out/2**(n-1)]`` (``[out/2, out/2]`` for two branches).
    """
    widths = [out_channels // 2 ** (i + 1) for i in range(block_num - 1)]
    widths.append(widths[-1])
    if sum(widths) != out_channels:
        raise ValueError(f"out_channels {out_channels} not divisible into {block_num} branches")
    return widths


class CatBottleneck(nn.Module):
    """STDC module: ``block_num`` chained ConvX whose outputs are concatenated.

    Branch 0 is a 1x1 ConvX to ``out/2`` channels, the others are 3x3 ConvX halving the width
    (the last keeps it). With ``stride == 2`` the downsampling happens outside the convs: the
    input of branch 1 goes through ``avd_layer`` (depth-wise 3x3 stride-2 conv, no bias, + BN,
    no ReLU) and branch 0's output is reduced by a 3x3 stride-2 average pool (``skip``).

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H/stride, W/stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, block_num: int = 4, stride: int = 1) -> None:
        super().__init__()
        if block_num < 2:
            raise ValueError(f"block_num must be >= 2, got {block_num}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        widths = _branch_channels(out_channels, block_num)
        half = widths[0]
        convs = [ConvX(in_channels, half, kernel_size=1)]
        convs += [ConvX(widths[i - 1], widths[i], kernel_size=3) for i in range(1, block_num)]
        self.conv_list = nn.ModuleList(convs)  # registered first: official state-dict key order
        if stride == 2:
            self.avd_layer = nn.Sequential(
                nn.Conv2d(half, half, 3, stride=2, padding=1, groups=half, bias=False),
                nn.BatchNorm2d(half),
            )
            self.skip = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        first = self.conv_list[0](x)
        out = self.avd_layer(first) if self.stride == 2 else first
        outs: list[Tensor] = []
        for conv in self.conv_list[1:]:
            out = conv(out)
            outs.append(out)
        if self.stride == 2:
            first = self.skip(first)
        return torch.cat([first, *outs], dim=1)


class STDCNet(nn.Module):
    """STDCNet feature extractor (STDC1: ``layers=(2, 2, 2)``, STDC2: ``(4, 5, 3)``).

    No ``conv_last`` and no classifier. ``forward(x)`` with ``x: (B, 3, H, W)`` returns
    ``{"res2": (B, base, H/4, W/4), "res3": (B, 4*base, H/8, W/8),
    "res4": (B, 8*base, H/16, W/16), "res5": (B, 16*base, H/32, W/32)}``.
    """

    out_strides: tuple[int, int, int, int] = (4, 8, 16, 32)

    def __init__(self, base: int = 64, layers: Sequence[int] = (2, 2, 2), block_num: int = 4) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 3 or min(layers) < 1:
            raise ValueError(f"layers must be 3 positive block counts, got {layers}")
        if base % 2:
            raise ValueError(f"base must be even, got {base}")
        self.layers = layers
        self.out_channels: tuple[int, int, int, int] = (base, base * 4, base * 8, base * 16)

        blocks: list[nn.Module] = [ConvX(3, base // 2, 3, stride=2), ConvX(base // 2, base, 3, stride=2)]
        in_channels = base
        for i, depth in enumerate(layers):
            out_channels = base * 2 ** (i + 2)
            for j in range(depth):
                blocks.append(CatBottleneck(in_channels, out_channels, block_num, stride=2 if j == 0 else 1))
                in_channels = out_channels
        self.features = nn.Sequential(*blocks)

        # Second registration of the same modules, exactly like the official module tree.
        bounds = [0, 1, 2, 2 + layers[0], 2 + layers[0] + layers[1], len(blocks)]
        for name, start, stop in zip(_STAGE_NAMES, bounds[:-1], bounds[1:], strict=True):
            self.add_module(name, self._stage_alias(start, stop))
        self.reset_parameters()

    def _stage_alias(self, start: int, stop: int) -> nn.Sequential:
        """``Sequential(Sequential({str(i): features[i] for i in range(start, stop)}))``."""
        inner = nn.Sequential(OrderedDict((str(i), self.features[i]) for i in range(start, stop)))
        return nn.Sequential(inner)

    def reset_parameters(self) -> None:
        """Convs ``kaiming_normal_(fan_out)``, BN weight 1 / bias 0 (STDC-Seg ``init_params``)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.x4(self.x2(x))
        outs = {"res2": x}
        x = self.x8(x)
        outs["res3"] = x
        x = self.x16(x)
        outs["res4"] = x
        outs["res5"] = self.x32(x)
        return outs


def stdc1(base: int = 64) -> STDCNet:
    """STDC1 (STDCNet813): stages of 2, 2, 2 blocks."""
    return STDCNet(base=base, layers=(2, 2, 2))


def stdc2(base: int = 64) -> STDCNet:
    """STDC2 (STDCNet1446): stages of 4, 5, 3 blocks."""
    return STDCNet(base=base, layers=(4, 5, 3))


def _canonical_key(key: str) -> str:
    """Map a stage-alias key ``x{s}.0.{i}.rest`` to ``features.{i}.rest``; others unchanged."""
    parts = key.split(".", 3)
    if len(parts) == 4 and parts[0] in _STAGE_NAMES and parts[1] == "0" and parts[2].isdigit():
        return f"features.{parts[2]}.{parts[3]}"
    return key


def load_stdc_pretrained(model: STDCNet, state_dict: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Load STDC-Seg ImageNet weights (``STDCNet813M_73.91.tar`` / ``STDCNet1446_76.47.tar``).

    Accepts the raw state dict or a container with a ``"state_dict"`` / ``"model"`` entry (the
    official ``STDC{1,2}.pkl``); values may be tensors or numpy arrays, a ``module.`` prefix is
    stripped. ``features.*`` and the stage aliases ``x2..x32.*`` are both understood (they name
    the same tensors); classifier keys ``fc.*``, ``bn.*``, ``linear.*``, ``conv_last.*`` are ignored.

    Returns ``(missing, unexpected)``: ``missing`` lists ``features.*`` keys that received no value
    (the aliases are filled through shared storage; ``num_batches_tracked`` is not reported);
    ``unexpected`` lists source keys that match nothing. Raises ``ValueError`` naming the key on
    a shape mismatch.
    """
    for container in ("state_dict", "model"):
        inner = state_dict.get(container)
        if isinstance(inner, Mapping):
            state_dict = inner
            break
    own = model.state_dict()
    canonical_own = [k for k in own if k.startswith("features.")]
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if name.startswith(_IGNORED_PREFIXES):
            continue
        if name not in own:
            unexpected.append(key)
            continue
        target = _canonical_key(name)
        tensor = torch.as_tensor(value)
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise ValueError(
                f"shape mismatch for {key!r}: checkpoint {tuple(tensor.shape)}, "
                f"model {tuple(own[target].shape)}"
            )
        if target not in mapped or name == target:  # prefer the features.* copy
            mapped[target] = tensor
    model.load_state_dict(mapped, strict=False)
    missing = [k for k in canonical_own if k not in mapped and not k.endswith("num_batches_tracked")]
    return missing, unexpected
