"""Parameter and FLOP counting (PyTorch's own FlopCounterMode, on the meta device: no compute).

The paper's "GFLOPs" come from fvcore, which counts one FLOP per multiply-accumulate. PyTorch's
counter counts two, so :func:`count_flops` reports both and the comparison uses MACs.
"""

from __future__ import annotations

import math
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


ARCHITECTURES: tuple[str, ...] = ("pem", "mask2former")


def _grid_sampler_flops(*args: object, out_shape: tuple[int, ...], **kwargs: object) -> int:
    """fvcore's count for ``aten::grid_sampler``: 4 MACs per output element, in FLOPs (2 per MAC)."""
    return 2 * 4 * math.prod(out_shape)


def flop_counter(depth: int = 3) -> FlopCounterMode:
    """PyTorch's FLOP counter with fvcore's ``grid_sample`` formula added (FLOPs: 2 per MAC)."""
    return FlopCounterMode(
        display=False, depth=depth, custom_mapping={torch.ops.aten.grid_sampler_2d: _grid_sampler_flops}
    )


def count_cost(
    config: PEMConfig,
    input_size: tuple[int, int] | None = None,
    with_postprocess: bool = False,
    architecture: str = "pem",
) -> ModelCost:
    """Count parameters and multiply-accumulates of ``config``'s model for a batch of one.

    ``with_postprocess`` adds the semantic inference (upsampling and the class x mask einsum at
    full resolution), which is how the paper's semantic-segmentation FLOPs were measured.
    ``architecture`` ``"mask2former"`` counts the Mask2Former baseline
    (:func:`pem.mask2former.build_mask2former`) with ``config``'s backbone and classes instead.
    """
    from pem.inference import semantic_inference
    from pem.model import PEM

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r}: choose from {', '.join(ARCHITECTURES)}")
    h, w = input_size or config.input_size
    cfg = config.replace(input_size=(h, w))
    with torch.device("meta"):
        if architecture == "mask2former":
            from pem.mask2former import build_mask2former

            model = build_mask2former(cfg).eval().requires_grad_(False)
        else:
            model = PEM(cfg).eval().requires_grad_(False)
        images = torch.empty(1, 3, h, w)
    # Not under no_grad: the counter's module tracker trips over views of grad-less leaves there.
    counter = flop_counter(depth=3)
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
