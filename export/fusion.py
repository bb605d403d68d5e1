"""Panoptic fusion from the panoptic head's outputs, in plain numpy (no torch).

This is the part of Mask2Former's panoptic inference that cannot be a fixed-shape graph (a
variable number of segments). It is written so that the torch-free runtime can reuse or
reimplement it; together with the in-graph part (:class:`export.heads.PanopticPostprocess`) it
reproduces :func:`pem.inference.panoptic_inference` exactly (tests/test_export_heads.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

VOID_LABEL = 255


@dataclass(frozen=True)
class PanopticSegment:
    """One segment: ``id`` in the id map (from 1), contiguous class id, thing or stuff, score, area."""

    id: int
    category_id: int
    isthing: bool
    score: float
    area: int


def panoptic_fusion(
    scores: np.ndarray,
    classes: np.ndarray,
    owner: np.ndarray,
    owner_fg: np.ndarray,
    mask_area: np.ndarray,
    thing_ids: Iterable[int],
    num_classes: int,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[np.ndarray, list[PanopticSegment]]:
    """Mask2Former panoptic fusion for ONE image from the panoptic head's outputs.

    Args:
        scores: (Q,) float32, best class probability per query.
        classes: (Q,) int, its class (``num_classes`` = no object).
        owner: (H, W) int, per pixel the kept query with the highest ``score * sigmoid(mask)``.
        owner_fg: (H, W) 0/1, whether the owner's mask probability is >= 0.5 there.
        mask_area: (Q,) int, pixels where each query's mask probability is >= 0.5.
        thing_ids: class ids that are things; others are stuff (one segment per class).
        num_classes: K.
        object_mask_threshold: the threshold the graph was exported with (the sidecar's value).
        overlap_threshold: minimum visible / own area of a kept segment.

    Returns:
        (id map (H, W) int32 with 0 = void, segments in id order).
    """
    scores = np.asarray(scores, dtype=np.float32)
    classes = np.asarray(classes).astype(np.int64)
    owner = np.asarray(owner).astype(np.int64)
    fg = np.asarray(owner_fg).astype(bool)
    keep = (classes != num_classes) & (scores > np.float32(object_mask_threshold))
    id_map = np.zeros(owner.shape, dtype=np.int32)
    segments: list[PanopticSegment] = []
    if not keep.any():
        return id_map, segments
    q = scores.shape[0]
    owned_area = np.bincount(owner.ravel(), minlength=q)
    visible_area = np.bincount(owner[fg].ravel(), minlength=q)
    things = {int(t) for t in thing_ids}
    query_segment = np.zeros(q, dtype=np.int32)  # segment id per query, 0 = dropped
    stuff_ids: dict[int, int] = {}
    areas: dict[int, int] = {}
    next_id = 1
    for k in np.flatnonzero(keep):
        area, original, visible = int(owned_area[k]), int(mask_area[k]), int(visible_area[k])
        if area == 0 or original == 0 or visible == 0 or area / original < overlap_threshold:
            continue
        category = int(classes[k])
        isthing = category in things
        if not isthing and category in stuff_ids:
            query_segment[k] = stuff_ids[category]
            areas[stuff_ids[category]] += visible
            continue
        if not isthing:
            stuff_ids[category] = next_id
        query_segment[k] = next_id
        areas[next_id] = visible
        segments.append(PanopticSegment(next_id, category, isthing, float(scores[k]), 0))
        next_id += 1
    id_map = np.where(fg, query_segment[owner], 0).astype(np.int32)
    segments = [PanopticSegment(s.id, s.category_id, s.isthing, s.score, areas[s.id]) for s in segments]
    return id_map, segments


def category_map(id_map: np.ndarray, segments: list[PanopticSegment], void: int = VOID_LABEL) -> np.ndarray:
    """(H, W) segment ids -> (H, W) int32 class ids, ``void`` where no segment."""
    lut = np.full(max((s.id for s in segments), default=0) + 1, void, dtype=np.int32)
    for s in segments:
        lut[s.id] = s.category_id
    return lut[id_map]
