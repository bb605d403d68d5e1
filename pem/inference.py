"""Semantic and panoptic inference from PEM's (class logits, mask logits) pairs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from contract.segments import Segment


def semantic_inference(pred_logits: Tensor, pred_masks: Tensor, output_size: tuple[int, int]) -> Tensor:
    """Per-class score maps.

    Args:
        pred_logits: (B, Q, K+1) class logits (last = "no object").
        pred_masks: (B, Q, h, w) mask logits at 1/4 of the (padded) input.
        output_size: (H, W) of the original image; masks are upsampled to the padded size
            (4h, 4w) first and then cropped, as in the official post-processing.

    Returns:
        (B, K, H, W) scores ``sum_q softmax(class)_q[k] * sigmoid(mask_q)``.
    """
    h, w = output_size
    masks = F.interpolate(
        pred_masks,
        size=(pred_masks.shape[-2] * 4, pred_masks.shape[-1] * 4),
        mode="bilinear",
        align_corners=False,
    )[..., :h, :w]
    probs = pred_logits.softmax(dim=-1)[..., :-1]
    return torch.einsum("bqk,bqhw->bkhw", probs, masks.sigmoid())


@dataclass
class PanopticResult:
    """Panoptic id map (H, W) int32 (0 = void) and its segments."""

    id_map: Tensor
    segments: list[Segment] = field(default_factory=list)


def panoptic_inference(
    class_logits: Tensor,
    mask_logits: Tensor,
    thing_ids: tuple[int, ...] | list[int],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> PanopticResult:
    """Mask2Former panoptic fusion for one image.

    Args:
        class_logits: (Q, K+1).
        mask_logits: (Q, H, W) at output resolution.
        thing_ids: contiguous ids of "thing" classes; all others are stuff (merged per class).
        object_mask_threshold: minimum class score of a kept query.
        overlap_threshold: minimum visible-area / own-area ratio of a kept segment.
    """
    num_classes = class_logits.shape[-1] - 1
    scores, labels = class_logits.softmax(dim=-1).max(dim=-1)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    h, w = mask_logits.shape[-2:]
    id_map = torch.zeros((h, w), dtype=torch.int32, device=mask_logits.device)
    result = PanopticResult(id_map)
    if not bool(keep.any()):
        return result
    cur_scores, cur_classes = scores[keep], labels[keep]
    cur_masks = mask_logits[keep].sigmoid()
    owner = (cur_scores[:, None, None] * cur_masks).argmax(dim=0)
    things = set(int(t) for t in thing_ids)
    stuff_ids: dict[int, int] = {}
    next_id = 1
    for k in range(cur_classes.shape[0]):
        category = int(cur_classes[k])
        isthing = category in things
        owned = owner == k
        area = int(owned.sum())
        original_area = int((cur_masks[k] >= 0.5).sum())
        segment_mask = owned & (cur_masks[k] >= 0.5)
        segment_area = int(segment_mask.sum())
        if area == 0 or original_area == 0 or segment_area == 0:
            continue
        if area / original_area < overlap_threshold:
            continue
        if not isthing and category in stuff_ids:
            id_map[segment_mask] = stuff_ids[category]
            result.segments = [
                replace(seg, area=seg.area + segment_area) if seg.id == stuff_ids[category] else seg
                for seg in result.segments
            ]
            continue
        if not isthing:
            stuff_ids[category] = next_id
        id_map[segment_mask] = next_id
        result.segments.append(Segment(next_id, category, isthing, float(cur_scores[k]), segment_area))
        next_id += 1
    return result
