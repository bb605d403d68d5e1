"""Datasets: Cityscapes, ADE20K and a synthetic Cityscapes-format set; augmentation and mappers.

Readers return :class:`~pem.data.common.Sample` records (contiguous class ids, 255 = ignore);
:func:`open_dataset` picks the reader by dataset name.
"""

from __future__ import annotations

import os
from typing import Literal

from contract.vocabulary import Task
from pem.data.common import DatasetError, DatasetMeta, Sample, SegmentationDataset, SegmentInfo

__all__ = ["DatasetError", "DatasetMeta", "Sample", "SegmentInfo", "SegmentationDataset", "open_dataset"]


def open_dataset(
    root: str | os.PathLike[str],
    dataset: Literal["cityscapes", "ade20k"],
    split: str,
    task: Task,
) -> SegmentationDataset:
    """Open ``split`` of a Cityscapes-layout (the synthetic set included) or ADE20K folder."""
    if dataset == "cityscapes":
        from pem.data.cityscapes import CityscapesDataset

        return CityscapesDataset(root, split, task)
    if dataset == "ade20k":
        from pem.data.ade20k import ADE20KDataset

        return ADE20KDataset(root, split, task)
    raise DatasetError(f"{root}: unknown dataset kind {dataset!r} (cityscapes or ade20k)")
