"""From samples to what the criterion trains on: per-segment binary masks + class labels, batched.

Semantic mapping: one mask per class present (ignore pixels belong to no mask). Panoptic
mapping: one mask per non-crowd segment (crowd regions are not supervised), as in the
Mask2Former mappers. Batches are padded to a multiple of 32 (and at least a given size);
padded image pixels take the pixel mean (zero after normalisation) and padded mask pixels are 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from contract.vocabulary import Task
from pem.data.common import IGNORE_LABEL, Sample


@dataclass
class Target:
    """Ground truth of one image: ``labels`` (N,) int64 class ids, ``masks`` (N, H, W) bool."""

    labels: Tensor
    masks: Tensor


@dataclass
class Batch:
    """A padded batch: ``images`` (B, 3, H, W) float RGB 0-255 and one :class:`Target` per image."""

    images: Tensor
    targets: list[Target]


def semantic_target(sem_seg: np.ndarray, ignore_label: int = IGNORE_LABEL) -> Target:
    """(H, W) class map -> one mask per class present."""
    classes = np.unique(sem_seg)
    classes = classes[classes != ignore_label]
    masks = sem_seg[None] == classes[:, None, None]
    return Target(torch.as_tensor(classes, dtype=torch.int64), torch.from_numpy(masks))


def panoptic_target(sample: Sample) -> Target:
    """Segment map -> one mask per non-crowd segment with at least one pixel."""
    if sample.pan_seg is None:
        raise ValueError(f"{sample.name}: panoptic target needs a segment map")
    labels, masks = [], []
    for seg in sample.segments:
        if seg.iscrowd:
            continue
        mask = sample.pan_seg == seg.id
        if mask.any():
            labels.append(seg.category_id)
            masks.append(mask)
    h, w = sample.pan_seg.shape
    stacked = np.stack(masks) if masks else np.zeros((0, h, w), bool)
    return Target(torch.as_tensor(labels, dtype=torch.int64), torch.from_numpy(stacked))


def make_target(sample: Sample, task: Task) -> Target:
    """The training target of ``sample`` for ``task``."""
    if task == "panoptic":
        return panoptic_target(sample)
    if sample.sem_seg is None:
        raise ValueError(f"{sample.name}: semantic target needs a label map")
    return semantic_target(sample.sem_seg)


def image_tensor(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 0-255."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()


def padded_size(
    sizes: Sequence[tuple[int, int]], divisor: int = 32, min_size: tuple[int, int] = (0, 0)
) -> tuple[int, int]:
    """Smallest (H, W) >= every size and ``min_size``, rounded up to ``divisor``."""
    h = max([min_size[0], *(s[0] for s in sizes)])
    w = max([min_size[1], *(s[1] for s in sizes)])
    return h + (-h) % divisor, w + (-w) % divisor


def collate(
    samples: Sequence[tuple[np.ndarray, Target]],
    pixel_mean: Sequence[float],
    divisor: int = 32,
    min_size: tuple[int, int] = (0, 0),
) -> Batch:
    """Pad (image (H, W, 3) uint8, target) pairs into a :class:`Batch`."""
    sizes = [img.shape[:2] for img, _ in samples]
    ph, pw = padded_size(sizes, divisor, min_size)
    images = torch.empty((len(samples), 3, ph, pw), dtype=torch.float32)
    images[:] = torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
    targets = []
    for i, (img, target) in enumerate(samples):
        h, w = img.shape[:2]
        images[i, :, :h, :w] = image_tensor(img)
        masks = torch.zeros((target.masks.shape[0], ph, pw), dtype=torch.bool)
        masks[:, :h, :w] = target.masks
        targets.append(Target(target.labels, masks))
    return Batch(images, targets)
