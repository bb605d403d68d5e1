"""The Mask2Former set criterion used by PEM.

For each supervised output (the final one and, with deep supervision, every auxiliary one) the
queries are Hungarian-matched to the targets, then:

- ``loss_ce``: cross-entropy over K+1 classes for all queries (unmatched -> "no object", whose
  class weight is ``no_object_weight``), weighted mean (sum / the sum of the weights);
- ``loss_mask``: sigmoid BCE on ``num_points`` points per matched mask, chosen by importance
  sampling (uncertain points + uniform ones), mean over points, summed over masks / num_masks;
- ``loss_dice``: dice loss (+1 smoothing) on the same points, summed over masks / num_masks.

Losses are computed in fp32 whatever the autocast state.

Distributed training: the two divisors (``num_masks`` and the class-weight sum) depend only on
the targets, so :meth:`SetCriterion.normalizers` gives them per rank and the trainer sums them
over the ranks of a step (each rank then divides by ``total / world_size``; DDP averages the
gradients), which makes the losses and gradients those of the whole global batch. With one
generator per image, the matcher's and the losses' random points of an image do not depend on
which rank or micro-batch it is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pem.config import float_field, int_field
from pem.data.mapper import Target
from pem.train.matcher import HungarianMatcher, image_generator, matched_pairs
from pem.train.points import point_sample, uncertain_point_coords


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (also the matching costs) and point sampling of the criterion."""

    # The ranges are checked by TrainConfig (pem.train.config), not here.
    class_weight: float = float_field(2.0, 0.0)
    mask_weight: float = float_field(5.0, 0.0)
    dice_weight: float = float_field(5.0, 0.0)
    no_object_weight: float = float_field(0.1, 0.0)
    num_points: int = int_field(12544, 1)
    oversample_ratio: float = float_field(3.0, 1.0)
    importance_sample_ratio: float = float_field(0.75, 0.0, 1.0)
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

    def normalizers(self, targets: list[Target], num_queries: int) -> tuple[float, float]:
        """(number of masks, sum of the class weights of all queries) of a batch.

        Every image matches ``min(masks, queries)`` queries (weight 1) and leaves the others to
        "no object" (weight ``no_object_weight``), whatever the predictions.
        """
        counts = [int(t.labels.numel()) for t in targets]
        matched = sum(min(n, num_queries) for n in counts)
        unmatched = len(targets) * num_queries - matched
        return float(sum(counts)), matched + self.cfg.no_object_weight * unmatched

    def loss_labels(
        self,
        logits: Tensor,
        targets: list[Target],
        indices: list[tuple[Tensor, Tensor]],
        weight_sum: float | None = None,
    ) -> Tensor:
        """Weighted cross-entropy of (B, Q, K+1) logits against matched labels / no-object.

        ``weight_sum``: the divisor (default: the class-weight sum of this batch, i.e. the mean).
        """
        batch, src, _ = matched_pairs(indices)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        if batch.numel():
            labels = torch.cat([t.labels[j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
            target_classes[batch, src] = labels
        weights = self.empty_weight.to(logits.device)
        total = F.cross_entropy(logits.float().transpose(1, 2), target_classes, weights, reduction="sum")
        if weight_sum is None:
            weight_sum = float(weights[target_classes].sum())
        return total / weight_sum

    def loss_masks(
        self,
        masks: Tensor,
        targets: list[Target],
        indices: list[tuple[Tensor, Tensor]],
        num_masks: float,
        generator: torch.Generator | Sequence[torch.Generator] | None,
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
            if generator is None or isinstance(generator, torch.Generator):
                coords = self._points(src_masks, generator)
            else:  # one generator per image: the image's masks draw from its own
                parts = []
                for b in range(len(targets)):
                    select = (batch == b).nonzero()[:, 0].to(masks.device)
                    if select.numel():
                        parts.append(self._points(src_masks[select], image_generator(generator, b)))
                coords = torch.cat(parts)
            point_labels = point_sample(tgt_masks, coords)[:, 0]
        point_logits = point_sample(src_masks, coords)[:, 0]
        return sigmoid_bce_loss(point_logits, point_labels, num_masks), dice_loss(
            point_logits, point_labels, num_masks
        )

    def _points(self, src_masks: Tensor, generator: torch.Generator | None) -> Tensor:
        cfg = self.cfg
        return uncertain_point_coords(
            src_masks, cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio, generator
        )

    def _losses(
        self,
        logits: Tensor,
        masks: Tensor,
        targets: list[Target],
        num_masks: float,
        weight_sum: float | None,
        generator,
    ) -> dict[str, Tensor]:
        indices = self.matcher(logits, masks, targets, generator)
        loss_mask, loss_dice = self.loss_masks(masks, targets, indices, num_masks, generator)
        return {
            "loss_ce": self.loss_labels(logits, targets, indices, weight_sum),
            "loss_mask": loss_mask,
            "loss_dice": loss_dice,
        }

    def forward(
        self,
        outputs: dict[str, object],
        targets: list[Target],
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        normalizers: tuple[float, float] | None = None,
    ) -> dict[str, Tensor]:
        """All losses (unweighted), keys ``loss_ce``, ``loss_mask``, ``loss_dice`` and ``..._{i}`` for aux i.

        Args:
            outputs: the model's dict: ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, h, w),
                ``aux_outputs`` (list of the same).
            targets: one :class:`~pem.data.mapper.Target` per image, masks at the padded input size.
            generator: point sampling; one for the batch or one per image.
            normalizers: (num_masks, class-weight sum) divisors; default :meth:`normalizers` of
                this batch with num_masks >= 1 (distributed runs pass the global ones, num_masks
                clamped to >= 1, divided by the world size).
        """
        if normalizers is None:
            count, weight_sum = self.normalizers(targets, outputs["pred_logits"].shape[1])
            normalizers = (max(count, 1.0), weight_sum)
        num_masks, weight_sum = normalizers
        losses = self._losses(
            outputs["pred_logits"], outputs["pred_masks"], targets, num_masks, weight_sum, generator
        )
        if self.cfg.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_losses = self._losses(
                    aux["pred_logits"], aux["pred_masks"], targets, num_masks, weight_sum, generator
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
