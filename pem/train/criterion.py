"""The Mask2Former set criterion used by PEM.

For each supervised output (the final one and, with deep supervision, every auxiliary one) the
queries are Hungarian-matched to the targets, then:

- ``loss_ce``: cross-entropy over K+1 classes for all queries (unmatched -> "no object", whose
  class weight is ``no_object_weight``), weighted mean;
- ``loss_mask``: sigmoid BCE on ``num_points`` points per matched mask, chosen by importance
  sampling (uncertain points + uniform ones), mean over points, summed over masks / num_masks;
- ``loss_dice``: dice loss (+1 smoothing) on the same points, summed over masks / num_masks.

Losses are computed in fp32 whatever the autocast state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pem.data.mapper import Target
from pem.train.matcher import HungarianMatcher, matched_pairs
from pem.train.points import point_sample, uncertain_point_coords


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (also the matching costs) and point sampling of the criterion."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Sum over masks of ``1 - (2|p t| + 1) / (|p| + |t| + 1)`` / num_masks; inputs (M, P)."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_bce_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Sum over masks of the mean point BCE / num_masks; inputs (M, P)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


class SetCriterion(nn.Module):
    """Matching + class / mask / dice losses over the final and auxiliary outputs."""

    def __init__(self, num_classes: int, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LossConfig()
        self.num_classes = num_classes
        self.matcher = HungarianMatcher(cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.num_points)
        weight = torch.ones(num_classes + 1)
        weight[-1] = cfg.no_object_weight
        self.register_buffer("empty_weight", weight, persistent=False)

    @property
    def weights(self) -> dict[str, float]:
        c = self.cfg
        return {"loss_ce": c.class_weight, "loss_mask": c.mask_weight, "loss_dice": c.dice_weight}

    def loss_labels(
        self, logits: Tensor, targets: list[Target], indices: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        """Weighted cross-entropy of (B, Q, K+1) logits against matched labels / no-object."""
        batch, src, _ = matched_pairs(indices)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        if batch.numel():
            labels = torch.cat([t.labels[j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
            target_classes[batch, src] = labels
        return F.cross_entropy(logits.float().transpose(1, 2), target_classes, self.empty_weight)

    def loss_masks(
        self,
        masks: Tensor,
        targets: list[Target],
        indices: list[tuple[Tensor, Tensor]],
        num_masks: float,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """Point-sampled BCE and dice of matched (B, Q, h, w) mask logits."""
        batch, src, _ = matched_pairs(indices)
        if batch.numel() == 0:
            zero = masks.sum() * 0.0
            return zero, zero
        src_masks = masks[batch.to(masks.device), src.to(masks.device)].float()[:, None]  # (M, 1, h, w)
        tgt_masks = torch.cat([t.masks[j] for t, (_, j) in zip(targets, indices)]).to(masks.device)
        tgt_masks = tgt_masks[:, None].float()  # (M, 1, H, W)
        with torch.no_grad():
            coords = uncertain_point_coords(
                src_masks,
                self.cfg.num_points,
                self.cfg.oversample_ratio,
                self.cfg.importance_sample_ratio,
                generator,
            )
            point_labels = point_sample(tgt_masks, coords)[:, 0]
        point_logits = point_sample(src_masks, coords)[:, 0]
        return sigmoid_bce_loss(point_logits, point_labels, num_masks), dice_loss(
            point_logits, point_labels, num_masks
        )

    def _losses(
        self, logits: Tensor, masks: Tensor, targets: list[Target], num_masks: float, generator
    ) -> dict[str, Tensor]:
        indices = self.matcher(logits, masks, targets, generator)
        loss_mask, loss_dice = self.loss_masks(masks, targets, indices, num_masks, generator)
        return {
            "loss_ce": self.loss_labels(logits, targets, indices),
            "loss_mask": loss_mask,
            "loss_dice": loss_dice,
        }

    def forward(
        self, outputs: dict[str, object], targets: list[Target], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """All losses (unweighted), keys ``loss_ce``, ``loss_mask``, ``loss_dice`` and ``..._{i}`` for aux i.

        Args:
            outputs: the model's dict: ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, h, w),
                ``aux_outputs`` (list of the same).
            targets: one :class:`~pem.data.mapper.Target` per image, masks at the padded input size.
        """
        num_masks = float(max(sum(int(t.labels.numel()) for t in targets), 1))
        losses = self._losses(outputs["pred_logits"], outputs["pred_masks"], targets, num_masks, generator)
        if self.cfg.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_losses = self._losses(
                    aux["pred_logits"], aux["pred_masks"], targets, num_masks, generator
                )
                losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses

    def total(self, losses: dict[str, Tensor]) -> Tensor:
        """Weighted sum of :meth:`forward`'s losses."""
        weights = self.weights
        return sum(
            value * weights[key.rsplit("_", 1)[0] if key[-1].isdigit() else key]
            for key, value in losses.items()
        )
