"""The panoptic segment record that both sides produce (PyTorch inference and the runtime)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """One panoptic segment: its ``id`` in the id map, contiguous class id, thing or stuff.

    ``area`` is in pixels of the id map it comes with: the model's input size straight out of
    the fusion, the original image size in a :class:`runtime.core.segmenter.Result` (the runtime
    recounts it there with :func:`runtime.core.postprocess.segments_at_size`).
    """

    id: int
    category_id: int
    isthing: bool
    score: float
    area: int
