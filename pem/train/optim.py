"""Optimizer and learning-rate schedule of the PEM recipe.

AdamW; parameters of modules under ``backbone`` get ``lr * backbone_multiplier``; parameters
owned by normalisation layers and embeddings get no weight decay (everything else, PEM-CA's
``alpha`` included, gets ``weight_decay``). Equal settings share one parameter group.
Schedule: optional linear warm-up, then cosine from ``lr`` to ``lr_end`` over all iterations,
set per iteration (a pure function of the step, so resuming needs no scheduler state).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_NO_DECAY_TYPES = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm and its CPU variant
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.Embedding,
)


def parameter_groups(
    model: nn.Module, backbone_multiplier: float, weight_decay: float
) -> list[dict[str, object]]:
    """Parameter groups with ``lr_scale`` (1 or the backbone multiplier) and ``weight_decay``."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{module_name}.{name}" if module_name else name
            scale = backbone_multiplier if "backbone" in full else 1.0
            decay = 0.0 if isinstance(module, _NO_DECAY_TYPES) else weight_decay
            groups.setdefault((scale, decay), []).append(param)
    return [
        {"params": params, "lr_scale": scale, "weight_decay": decay}
        for (scale, decay), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], -kv[0][1]))
    ]


def scaled_groups(
    model: nn.Module, lr: float, backbone_multiplier: float, weight_decay: float
) -> list[dict[str, object]]:
    """:func:`parameter_groups` with each group's ``lr`` set: ``lr`` times its ``lr_scale``."""
    groups = parameter_groups(model, backbone_multiplier, weight_decay)
    for group in groups:
        group["lr"] = lr * float(group["lr_scale"])  # type: ignore[arg-type]
    return groups


def build_optimizer(
    model: nn.Module, lr: float, backbone_multiplier: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW (default betas / eps) over :func:`scaled_groups`."""
    return torch.optim.AdamW(scaled_groups(model, lr, backbone_multiplier, weight_decay), lr=lr)


def learning_rate(step: int, total: int, lr: float, lr_end: float = 0.0, warmup: int = 0) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up from 0.001 lr, then cosine to ``lr_end``."""
    if warmup > 0 and step < warmup:
        alpha = step / warmup
        factor = 0.001 * (1 - alpha) + alpha
    else:
        factor = 1.0
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    cosine = lr_end + (lr - lr_end) * 0.5 * (1 + math.cos(math.pi * progress))
    return cosine * factor


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply ``lr`` (times each group's ``lr_scale``) to every group."""
    for group in optimizer.param_groups:
        group["lr"] = lr * float(group.get("lr_scale", 1.0))
