"""Hungarian matching of predicted (class, mask) pairs to ground-truth segments.

Cost per (query, target) = ``class_weight * -p(target class)`` + ``mask_weight * BCE`` +
``dice_weight * dice``, the mask terms on ``num_points`` random points shared by all masks of
the image; the assignment is ``scipy.optimize.linear_sum_assignment`` on that cost (fp32).

Targets the matcher cannot tell apart (same class and the same value at every matching point,
e.g. small segments of one class that no point falls in) have identical cost columns: any
permutation of their queries costs the same, and the solver's choice among them would be decided
by float rounding in the other costs (different between thread counts, batch layouts, world
sizes and CPUs). Such targets get their queries in a canonical order instead (ascending query
to ascending target), a choice that depends on the data only: the matching, and with it the
loss, no longer hangs on the last bits of the costs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from pem.data.mapper import Target
from pem.train.points import point_sample


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE of every prediction vs every target: (Q, P), (N, P) -> (Q, N)."""
    num_points = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / num_points


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss (+1 smoothing) of every prediction vs every target: (Q, P), (N, P) -> (Q, N)."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    """One-to-one assignment of queries to targets, image by image."""

    def __init__(
        self,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        num_points: int = 12544,
    ):
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("matcher costs cannot all be zero")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self, logits: Tensor, masks: Tensor, target: Target, generator: torch.Generator | None = None
    ) -> Tensor:
        """Matching cost of one image.

        Args:
            logits: (Q, K+1) class logits.
            masks: (Q, h, w) mask logits.
            target: N ground-truth masks (N, H, W) and labels (N,).
        Returns:
            (Q, N) cost.
        """
        return self._cost_and_target_points(logits, masks, target, generator)[0]

    def _cost_and_target_points(
        self, logits: Tensor, masks: Tensor, target: Target, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`cost_matrix` and the targets' values at the matching points (N, P)."""
        prob = logits.float().softmax(-1)
        cost_class = -prob[:, target.labels.to(logits.device)]
        coords = torch.rand(1, self.num_points, 2, generator=generator, device=masks.device)
        tgt = target.masks.to(masks.device, torch.float32)[:, None]
        tgt_points = point_sample(tgt, coords.expand(tgt.shape[0], -1, -1))[:, 0]
        pred_points = point_sample(masks.float()[:, None], coords.expand(masks.shape[0], -1, -1))[:, 0]
        cost_mask = pairwise_sigmoid_bce(pred_points, tgt_points)
        cost_dice = pairwise_dice(pred_points, tgt_points)
        cost = self.mask_weight * cost_mask + self.class_weight * cost_class + self.dice_weight * cost_dice
        return cost, tgt_points

    @torch.no_grad()
    def __call__(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor,
        targets: list[Target],
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """Match a batch.

        Args:
            pred_logits: (B, Q, K+1); pred_masks: (B, Q, h, w); targets: B :class:`Target`.
            generator: one generator for the batch, or one per image (then the points of an
                image do not depend on the other images of the batch).
        Returns:
            per image (query indices, target indices), both int64 of length min(Q, N).
        """
        indices = []
        for b, target in enumerate(targets):
            if target.labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            cost, tgt_points = self._cost_and_target_points(
                pred_logits[b], pred_masks[b], target, image_generator(generator, b)
            )
            cost = cost.cpu()
            cost = torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6).numpy()
            rows, cols = linear_sum_assignment(cost)
            cols = canonical_ties(cols, target.labels, tgt_points)
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices


def canonical_ties(cols: np.ndarray, labels: Tensor, target_points: Tensor) -> np.ndarray:
    """The assignment ``cols`` (target per matched query, queries ascending) with every group of
    indistinguishable targets (same label, same values at the matching points: identical cost
    columns, so every permutation among them costs the same) matched in a canonical order: the
    group's queries, ascending, take the group's lowest target indices, ascending.

    Equality is exact, on the targets' data (not on the costs, which carry the predictions'
    rounding): the same groups on every machine.
    """
    groups: dict[tuple[int, bytes], list[int]] = {}
    points = target_points.detach().cpu().contiguous()
    for index, label in enumerate(labels.tolist()):
        groups.setdefault((int(label), points[index].numpy().tobytes()), []).append(index)
    out = np.array(cols, copy=True)
    for members in groups.values():
        if len(members) < 2:
            continue
        slots = np.flatnonzero(np.isin(out, members))  # this group's queries, ascending
        out[slots] = members[: len(slots)]
    return out


def image_generator(
    generator: torch.Generator | Sequence[torch.Generator] | None, index: int
) -> torch.Generator | None:
    """The generator of image ``index``: its own when given one per image, else the shared one."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return generator[index]


def matched_pairs(indices: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten per-image matches into (batch index, query index, target index), each (M,)."""
    if not indices:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty, empty
    batch = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
    src = torch.cat([s for s, _ in indices])
    tgt = torch.cat([t for _, t in indices])
    return batch, src, tgt


__all__ = [
    "HungarianMatcher",
    "canonical_ties",
    "image_generator",
    "matched_pairs",
    "pairwise_dice",
    "pairwise_sigmoid_bce",
]
