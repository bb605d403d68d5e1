"""Model outputs -> results at the original image size: label maps, panoptic fusion, colours."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import cv2
import numpy as np

from contract.segments import Segment
from runtime.core.preprocess import Geometry
from runtime.errors import NonFiniteOutputError, OutputRangeError

PNG16_MAX = 65535


def to_original_size(label_map: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(height, width) integer map at model size -> (H, W) at the original size (nearest)."""
    valid = label_map[: geometry.resized_h, : geometry.resized_w]
    if valid.shape == (geometry.original_h, geometry.original_w):
        return np.ascontiguousarray(valid)
    # cv2 cannot resize int64; int32 holds every class and segment id we produce.
    return cv2.resize(
        valid.astype(np.int32, copy=False),
        (geometry.original_w, geometry.original_h),
        interpolation=cv2.INTER_NEAREST,
    )


def fuse_panoptic(
    scores: np.ndarray,
    classes: np.ndarray,
    owner: np.ndarray,
    owner_fg: np.ndarray,
    mask_area: np.ndarray,
    thing_ids: frozenset[int] | set[int],
    num_classes: int,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[np.ndarray, list[Segment]]:
    """Mask2Former panoptic fusion for one image, from the panoptic head's reduced outputs.

    Args:
        scores: (Q,) best class probability per query (over K + 1 classes).
        classes: (Q,) its class; ``num_classes`` means "no object".
        owner: (H, W) index of the kept query with the highest ``score * sigmoid(mask)``.
        owner_fg: (H, W) whether the owner's own mask probability is >= 0.5 there.
        mask_area: (Q,) pixels where each query's mask probability is >= 0.5.
        thing_ids: class ids that are things; other classes are stuff and merged per class.

    Returns:
        (H, W) int32 id map (0 = void) and the segments, ids from 1 in query order.
    """
    check_panoptic_outputs(classes, owner, mask_area, num_classes)
    keep = (classes != num_classes) & (scores > object_mask_threshold)
    id_map = np.zeros(owner.shape, dtype=np.int32)
    segments: list[Segment] = []
    if not keep.any():
        return id_map, segments
    q = scores.shape[0]
    fg = owner_fg.astype(np.uint8, copy=False)
    # One pass counts both areas: bin 2q + f holds the pixels of query q with foreground f.
    counts = np.bincount((owner.astype(np.int32, copy=False) * 2 + fg).ravel(), minlength=2 * q)
    segment_area = counts[1::2]
    owned_area = counts[0::2] + segment_area
    # Id of each query's segment (0 = dropped); stuff of one class shares the first id.
    segment_id = np.zeros(q + 1, dtype=np.int32)
    stuff_ids: dict[int, int] = {}
    areas: dict[int, int] = {}
    next_id = 1
    for k in np.flatnonzero(keep):
        area, original, visible = int(owned_area[k]), int(mask_area[k]), int(segment_area[k])
        if area == 0 or original == 0 or visible == 0 or area / original < overlap_threshold:
            continue
        category = int(classes[k])
        isthing = category in thing_ids
        if not isthing and category in stuff_ids:
            segment_id[k] = stuff_ids[category]
            areas[stuff_ids[category]] += visible
            continue
        if not isthing:
            stuff_ids[category] = next_id
        segment_id[k] = next_id
        areas[next_id] = visible
        segments.append(Segment(next_id, category, isthing, float(scores[k]), 0))
        next_id += 1
    id_map = np.take(segment_id, owner) * fg  # 0 where the owner's mask is background
    segments = [Segment(s.id, s.category_id, s.isthing, s.score, areas[s.id]) for s in segments]
    return id_map, segments


def check_finite_outputs(
    outputs: dict[str, np.ndarray], names: Sequence[str], index: int, image: str = "image"
) -> None:
    """Refuse NaN / Inf in the float outputs ``names`` of batch item ``index`` (others are not
    read). One reduction per output (a sum is finite when every value is; an overflowing sum is
    then checked value by value), so the check costs a fraction of the post-processing."""
    for name in names:
        value = outputs.get(name)
        if value is None or value.dtype.kind != "f" or value.size == 0:
            continue
        part = value[index] if value.ndim and value.shape[0] > index else value
        with np.errstate(over="ignore", invalid="ignore"):  # float16 sums in float32 (range)
            if np.isfinite(part.sum(dtype=np.float32 if part.dtype.itemsize < 4 else None)):
                continue
        bad = int(part.size - np.count_nonzero(np.isfinite(part)))
        if bad:
            raise NonFiniteOutputError(
                f"{image}: model output {name!r} holds NaN or Inf ({bad} of {part.size} values); "
                "the model or its precision is broken (an FP16 / INT8 overflow?), no result is made"
            )


def check_class_ids(labels: np.ndarray, num_classes: int, name: str = "labels") -> None:
    """Refuse a label map with ids outside ``[0, num_classes)`` (a model / sidecar mismatch)."""
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise OutputRangeError(
                f"model output {name!r} holds class id {bad}, outside the sidecar's {num_classes} classes "
                "(model and sidecar do not match)"
            )


def check_panoptic_outputs(
    classes: np.ndarray, owner: np.ndarray, mask_area: np.ndarray, num_classes: int
) -> None:
    """Refuse panoptic head outputs that index outside their range (``classes`` in
    ``[0, num_classes]``, ``owner`` in ``[0, Q)``, ``mask_area`` >= 0) instead of wrapping."""
    q = classes.shape[0]
    if classes.size and (int(classes.min()) < 0 or int(classes.max()) > num_classes):
        bad = int(classes.min()) if int(classes.min()) < 0 else int(classes.max())
        raise OutputRangeError(
            f"model output 'classes' holds class id {bad}, outside 0..{num_classes} "
            f"(the sidecar's {num_classes} classes + no-object)"
        )
    if owner.size and (int(owner.min()) < 0 or int(owner.max()) >= q):
        bad = int(owner.min()) if int(owner.min()) < 0 else int(owner.max())
        raise OutputRangeError(f"model output 'owner' holds query {bad}, outside 0..{q - 1}")
    if mask_area.size and int(mask_area.min()) < 0:
        raise OutputRangeError(f"model output 'mask_area' holds the negative area {int(mask_area.min())}")


def category_map(id_map: np.ndarray, segments: list[Segment], void: int = 255) -> np.ndarray:
    """(H, W) segment ids -> (H, W) int32 class ids, ``void`` where no segment."""
    lut = np.full(max((s.id for s in segments), default=0) + 1, void, dtype=np.int32)
    for s in segments:
        lut[s.id] = s.category_id
    return lut[id_map]


def colorize_labels(
    labels: np.ndarray, palette_rgb: np.ndarray, ignore_color: tuple[int, int, int] = (0, 0, 0)
) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 **BGR** image; ids outside the palette get ``ignore_color``."""
    lut = np.zeros((256 if len(palette_rgb) < 256 else len(palette_rgb) + 1, 3), np.uint8)
    lut[:] = ignore_color[::-1]
    lut[: len(palette_rgb)] = np.asarray(palette_rgb, np.uint8)[:, ::-1]
    ids = np.where((labels >= 0) & (labels < len(palette_rgb)), labels, len(lut) - 1)
    return lut[ids]


def colorize_panoptic(
    id_map: np.ndarray, segments: list[Segment], palette_rgb: np.ndarray, seed: int = 0
) -> np.ndarray:
    """(H, W) panoptic ids -> BGR image: stuff in its class colour, each thing a shade of it."""
    rng = np.random.default_rng(seed)
    lut = np.zeros((max([s.id for s in segments], default=0) + 1, 3), np.uint8)
    for s in segments:
        color = np.asarray(palette_rgb[s.category_id], np.int32)
        if s.isthing:
            color = np.clip(color + rng.integers(-50, 51, 3), 0, 255)
        lut[s.id] = color[::-1]
    return lut[np.clip(id_map, 0, len(lut) - 1)]


def outline_things(
    image_bgr: np.ndarray,
    id_map: np.ndarray,
    segments: list[Segment],
    color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """``image_bgr`` with a 1-pixel outline around each thing segment of a panoptic ``id_map``, so
    touching instances of one class (two cars) stay apart in an overlay. Returns a copy."""
    out = image_bgr.copy()
    for s in segments:
        if not s.isthing:
            continue
        mask = (id_map == s.id).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, color, thickness=1)
    return out


def legend_image(
    names: list[str] | tuple[str, ...],
    palette_rgb: np.ndarray,
    columns: int = 4,
    cell: tuple[int, int] = (22, 170),
    only: Iterable[int] | None = None,
) -> np.ndarray:
    """A BGR legend of ``names`` in their palette colours: a swatch and the name per class, in
    ``columns`` columns of ``cell`` (height, width) pixels, on white. ``only``: the class ids to
    list (e.g. those the model predicted), in id order; default all."""
    ids = sorted(set(only)) if only is not None else list(range(len(names)))
    rows = -(-len(ids) // columns) if ids else 0
    h, w = cell
    image = np.full((max(1, rows) * h + 4, columns * w + 4, 3), 255, np.uint8)
    for slot, i in enumerate(ids):
        name = names[i]
        y, x = 2 + (slot // columns) * h, 2 + (slot % columns) * w
        color = tuple(int(c) for c in np.asarray(palette_rgb[i], np.uint8)[::-1])
        cv2.rectangle(image, (x, y + 3), (x + h - 6, y + h - 3), color, thickness=-1)
        cv2.rectangle(image, (x, y + 3), (x + h - 6, y + h - 3), (0, 0, 0), thickness=1)
        cv2.putText(
            image, name, (x + h, y + h - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA
        )
    return image


def overlay(image_bgr: np.ndarray, color_bgr: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour map over the image (both (H, W, 3) uint8)."""
    return cv2.addWeighted(image_bgr, 1.0 - alpha, color_bgr, alpha, 0.0)


def label_png_array(
    values: np.ndarray, name: str, kind: str = "labels", bits: int | None = None
) -> np.ndarray:
    """An integer map as the array a label PNG stores: uint8 when every value fits (and ``bits``
    is not 16), else uint16; never a wrap-around.

    ``kind`` names the map in messages (``labels``: class ids, ``panoptic``: segment ids);
    ``bits=16`` forces 16-bit (panoptic ids). Raises :class:`OutputRangeError` naming ``name``
    when a value is negative or over 65535 (a PNG cannot hold it), or not an integer.
    """
    values = np.asarray(values)
    if values.dtype.kind not in "iub":
        raise OutputRangeError(f"{name}: {kind} must be integers to be written as PNG, got {values.dtype}")
    if values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0:
            raise OutputRangeError(f"{name}: {kind} hold the negative id {low}; a label PNG cannot store it")
        if high > PNG16_MAX:
            raise OutputRangeError(
                f"{name}: {kind} hold the id {high}, over the 16-bit PNG limit of {PNG16_MAX}; "
                "a label PNG cannot store it"
            )
    else:
        high = 0
    wide = bits == 16 or high > 255
    return values.astype(np.uint16 if wide else np.uint8, copy=False)


def fuse_panoptic_outputs(
    outputs: Mapping[str, np.ndarray],
    index: int,
    thing_ids: frozenset[int] | set[int],
    num_classes: int,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[np.ndarray, list[Segment]]:
    """:func:`fuse_panoptic` on image ``index`` of a panoptic head's batched outputs."""
    return fuse_panoptic(
        outputs["scores"][index],
        outputs["classes"][index],
        outputs["owner"][index],
        outputs["owner_fg"][index],
        outputs["mask_area"][index],
        thing_ids,
        num_classes,
        object_mask_threshold,
        overlap_threshold,
    )


def segments_at_size(id_map: np.ndarray, segments: list[Segment]) -> list[Segment]:
    """``segments`` with ``area`` recounted in ``id_map`` (e.g. after resizing it to the original
    image); a segment that no pixel of ``id_map`` holds any more is dropped."""
    if not segments:
        return []
    counts = np.bincount(id_map.ravel().astype(np.int64), minlength=max(s.id for s in segments) + 1)
    return [replace(s, area=int(counts[s.id])) for s in segments if counts[s.id] > 0]


def semantic_scores_from_raw(logits: np.ndarray, masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width, K) class scores of one image from the raw head's outputs, in numpy.

    ``logits``: (Q, K + 1); ``masks``: (Q, h, w) mask logits. Class scores are formed at mask
    resolution and then upsampled (cheaper than upsampling every query's mask first; borders may
    differ slightly from the in-graph semantic head).
    """
    logits = logits.astype(np.float32)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (probs / probs.sum(-1, keepdims=True))[:, :-1]  # (Q, K)
    sig = 1.0 / (1.0 + np.exp(-masks.astype(np.float32)))  # (Q, h, w)
    scores = np.einsum("qk,qhw->hwk", probs, sig)
    scores = cv2.resize(scores, (width, height), interpolation=cv2.INTER_LINEAR)
    if scores.ndim == 2:  # a single class: cv2 drops the channel axis
        scores = scores[:, :, None]
    return scores
