"""Training augmentation of the Mask2Former recipe on :class:`~pem.data.common.Sample` records.

Order (as in the official mappers): resize the shortest edge to a randomly chosen size (scale
jitter), random crop (optionally rejecting crops dominated by one class), photometric
distortion (SSD-style brightness, contrast, saturation, hue), horizontal flip. Images are
resized bilinearly, label and segment-id maps with nearest neighbour. All randomness comes from
the ``numpy.random.Generator`` passed in, so a sample's augmentation is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from pem.data.common import IGNORE_LABEL, Sample


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation parameters.

    The short side is drawn uniformly from ``short_side * s`` for ``s`` in
    ``scale_range[0], scale_range[0] + scale_step, ..., scale_range[1]`` (detectron2 "choice"
    sampling; Cityscapes: 1024 x 0.5..2.0), capped so the long side stays <= ``max_size``.
    ``crop_size`` is (H, W); images smaller than it are not padded here (the collate pads).
    ``single_category_max_area`` < 1 retries crops (up to 10) in which one class covers more than
    that fraction of the labelled pixels.
    """

    short_side: int = 1024
    scale_range: tuple[float, float] = (0.5, 2.0)
    scale_step: float = 0.1
    max_size: int = 4096
    crop_size: tuple[int, int] = (512, 1024)
    single_category_max_area: float = 1.0
    color: bool = True
    flip: bool = True

    def short_sides(self) -> list[int]:
        """The candidate short-side lengths."""
        lo, hi = self.scale_range
        n = round((hi - lo) / self.scale_step) if self.scale_step > 0 else 0
        return sorted({max(1, int(self.short_side * (lo + i * self.scale_step))) for i in range(n + 1)})


def resize(sample: Sample, height: int, width: int) -> Sample:
    """Resize a sample to (height, width): image bilinear, labels and segment ids nearest."""
    size = (width, height)
    image = cv2.resize(sample.image, size, interpolation=cv2.INTER_LINEAR)
    sem = (
        None if sample.sem_seg is None else cv2.resize(sample.sem_seg, size, interpolation=cv2.INTER_NEAREST)
    )
    pan = (
        None if sample.pan_seg is None else cv2.resize(sample.pan_seg, size, interpolation=cv2.INTER_NEAREST)
    )
    return replace(sample, image=image, sem_seg=sem, pan_seg=pan)


def resize_shortest_edge(sample: Sample, short: int, max_size: int) -> Sample:
    """Scale so the short side is ``short`` and the long side at most ``max_size``."""
    h, w = sample.image.shape[:2]
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    new_h, new_w = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    if (new_h, new_w) == (h, w):
        return sample
    return resize(sample, new_h, new_w)


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop rows ``top:top+height`` and columns ``left:left+width``."""
    sl = (slice(top, top + height), slice(left, left + width))
    return replace(
        sample,
        image=sample.image[sl],
        sem_seg=None if sample.sem_seg is None else sample.sem_seg[sl],
        pan_seg=None if sample.pan_seg is None else sample.pan_seg[sl],
    )


def random_crop(
    sample: Sample, size: tuple[int, int], rng: np.random.Generator, single_category_max_area: float = 1.0
) -> Sample:
    """Random (H, W) crop (clipped to the image); see :class:`AugmentConfig` for the area rule."""
    h, w = sample.image.shape[:2]
    ch, cw = min(size[0], h), min(size[1], w)
    for _ in range(10):
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        if single_category_max_area >= 1.0 or sample.sem_seg is None:
            break
        window = sample.sem_seg[top : top + ch, left : left + cw]
        counts = np.bincount(window[window != IGNORE_LABEL].ravel(), minlength=1)
        if len(counts) > 1 and counts.max() < single_category_max_area * counts.sum():
            break
    return crop(sample, top, left, ch, cw)


def hflip(sample: Sample) -> Sample:
    """Mirror left-right."""
    return replace(
        sample,
        image=np.ascontiguousarray(sample.image[:, ::-1]),
        sem_seg=None if sample.sem_seg is None else np.ascontiguousarray(sample.sem_seg[:, ::-1]),
        pan_seg=None if sample.pan_seg is None else np.ascontiguousarray(sample.pan_seg[:, ::-1]),
    )


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSD-style colour distortion of an (H, W, 3) uint8 RGB image.

    Each step with probability 1/2: brightness shift in [-32, 32]; contrast factor in [0.5, 1.5]
    (before or after the HSV steps, at random); saturation factor in [0.5, 1.5]; hue shift in
    [-18, 18] (OpenCV's 0..180 hue scale).
    """
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img = img + rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5

    def contrast(x: np.ndarray) -> np.ndarray:
        return x * rng.uniform(0.5, 1.5) if rng.random() < 0.5 else x

    if contrast_first:
        img = contrast(img)
    hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
    if rng.random() < 0.5:
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
    if rng.random() < 0.5:
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-18, 19))) % 180
    img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if not contrast_first:
        img = contrast(img)
    return np.clip(img, 0, 255).astype(np.uint8)


def augment(sample: Sample, cfg: AugmentConfig, rng: np.random.Generator) -> Sample:
    """The full training augmentation of one sample."""
    short = int(rng.choice(cfg.short_sides()))
    sample = resize_shortest_edge(sample, short, cfg.max_size)
    sample = random_crop(sample, cfg.crop_size, rng, cfg.single_category_max_area)
    if cfg.color:
        sample = replace(sample, image=photometric_distort(sample.image, rng))
    if cfg.flip and rng.random() < 0.5:
        sample = hflip(sample)
    return sample
