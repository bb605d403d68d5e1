"""Parameter and FLOP counting (PyTorch's own FlopCounterMode, on the meta device: no compute).

The paper's "GFLOPs" come from fvcore, which counts one FLOP per multiply-accumulate. PyTorch's
counter counts two, so :func:`count_flops` reports both and the comparison uses MACs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pem.config import PEMConfig


@dataclass(frozen=True)
class ModelCost:
    """Cost of one forward pass at ``input_size``."""

    params: int
    macs: int
    macs_by_part: dict[str, int]
    input_size: tuple[int, int]

    @property
    def gflops_fvcore(self) -> float:
        """GMACs, the unit the paper (fvcore) calls GFLOPs."""
        return self.macs / 1e9


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tensors registered twice are counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_cost(
    config: PEMConfig, input_size: tuple[int, int] | None = None, with_postprocess: bool = False
) -> ModelCost:
    """Count parameters and multiply-accumulates of ``config``'s model for a batch of one.

    ``with_postprocess`` adds the semantic inference (upsampling and the class x mask einsum at
    full resolution), which is how the paper's semantic-segmentation FLOPs were measured.
    """
    from pem.inference import semantic_inference
    from pem.model import PEM

    h, w = input_size or config.input_size
    cfg = config.replace(input_size=(h, w))
    with torch.device("meta"):
        model = PEM(cfg).eval().requires_grad_(False)
        images = torch.empty(1, 3, h, w)
    # Not under no_grad: the counter's module tracker trips over views of grad-less leaves there.
    counter = FlopCounterMode(display=False, depth=3)
    with counter:
        out = model(images)
        if with_postprocess:
            semantic_inference(out["pred_logits"], out["pred_masks"], (h, w))
    by_module = counter.get_flop_counts()
    parts = {
        "backbone": "PEM.backbone",
        "pixel_decoder": "PEM.sem_seg_head.pixel_decoder",
        "transformer_decoder": "PEM.sem_seg_head.predictor",
    }
    macs_by_part = {name: sum(by_module.get(key, {}).values()) // 2 for name, key in parts.items()}
    total = counter.get_total_flops() // 2
    if with_postprocess:
        macs_by_part["postprocess"] = total - sum(macs_by_part.values())
    return ModelCost(count_parameters(model), total, macs_by_part, (h, w))
