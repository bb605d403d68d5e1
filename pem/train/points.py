"""Point sampling for the mask losses (PointRend-style, as used by the Mask2Former criterion).

Coordinates are normalised to [0, 1] x [0, 1] in (x, y) order and sampled bilinearly with
``align_corners=False``, so the same points index predictions at 1/4 resolution and ground
truth at full resolution consistently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(values: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly sample ``values`` (N, C, H, W) at ``coords`` (N, P, 2) in [0, 1] -> (N, C, P)."""
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # (N, P, 1, 2)
    return F.grid_sample(values, grid, mode="bilinear", align_corners=False).squeeze(3)


def uncertain_point_coords(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Points concentrated where the mask logits are uncertain (close to 0).

    Draw ``oversample_ratio * num_points`` uniform points, keep the
    ``importance_sample_ratio * num_points`` with the smallest ``|logit|``, and fill up with
    uniform random points.

    Args:
        logits: (N, 1, H, W) mask logits.
    Returns:
        (N, num_points, 2) coordinates in [0, 1].
    """
    n = logits.shape[0]
    device = logits.device
    num_sampled = max(1, int(num_points * oversample_ratio))
    coords = torch.rand(n, num_sampled, 2, generator=generator, device=device)
    uncertainty = -point_sample(logits, coords)[:, 0].abs()  # (N, num_sampled)
    num_important = min(int(importance_sample_ratio * num_points), num_sampled)
    num_random = num_points - num_important
    index = uncertainty.topk(num_important, dim=1, sorted=False).indices  # (N, num_important)
    important = torch.gather(coords, 1, index[..., None].expand(-1, -1, 2))
    if num_random > 0:
        uniform = torch.rand(n, num_random, 2, generator=generator, device=device)
        important = torch.cat([important, uniform], dim=1)
    return important
