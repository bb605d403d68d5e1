"""ADE20K (SceneParsing, 150 classes) readers on the layouts of the Mask2Former/PEM preparation scripts.

``root`` is the ``ADEChallengeData2016`` folder (or its parent):

- semantic: ``images/{training,validation}/*.jpg`` with ``annotations_detectron2/{...}/*.png``
  (``prepare_ade20k_sem_seg.py``: class ids 0..149, 255 = ignore);
- panoptic: ``ade20k_panoptic_{train,val}.json`` + ``ade20k_panoptic_{train,val}/*.png``
  (``prepare_ade20k_pan_seg.py``; COCO panoptic format, categories 0..149 with ``isthing``).

Class names and the thing/stuff split come from the panoptic json when present.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from contract.vocabulary import Task
from pem.data.common import (
    IGNORE_LABEL,
    CategoryMap,
    DatasetError,
    DatasetMeta,
    FolderDataset,
    SegmentInfo,
    parse_panoptic_json,
    read_label_png,
    require_dir,
)
from pem.datasets_meta import ADE20K_NUM_CLASSES

_SPLIT_DIRS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def _resolve_root(root: Path) -> Path:
    require_dir(root, "dataset folder")
    nested = root / "ADEChallengeData2016"
    return nested if nested.is_dir() else root


class ADE20KDataset(FolderDataset):
    """ADE20K ``split`` (``train`` / ``val``) for ``task`` ``semantic`` or ``panoptic``.

    ``dataset[i]`` is a :class:`~pem.data.common.Sample` with ``sem_seg`` (H, W) in 0..149 / 255
    and, for panoptic, ``pan_seg`` (H, W) int32 plus its segments.
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train", task: Task = "semantic"):
        self.root = _resolve_root(Path(root))
        if split not in _SPLIT_DIRS:
            raise DatasetError(f"{self.root}: unknown ADE20K split {split!r} (train or val)")
        self.split = "train" if _SPLIT_DIRS[split] == "training" else "val"
        folder = _SPLIT_DIRS[split]
        self.task = task
        self.image_dir = require_dir(self.root / "images" / folder, "image folder")
        self.sem_dir = self.root / "annotations_detectron2" / folder
        if task == "semantic":
            require_dir(self.sem_dir, "semantic annotation folder (run prepare_ade20k_sem_seg.py)")
            names = sorted(p.stem for p in self.image_dir.glob("*.jpg"))
            self._set_names(
                names, f"{self.image_dir}: no *.jpg images found", self._sem_path, "annotation file"
            )
            self.meta = self._meta_from_json_if_any()
        elif task == "panoptic":
            json_path = self.root / f"ade20k_panoptic_{self.split}.json"
            self._index_panoptic(json_path, self.root / f"ade20k_panoptic_{self.split}", self._categories)
        else:
            raise DatasetError(f"{self.root}: unknown task {task!r} (semantic or panoptic)")

    def _categories(self, categories: list[dict]) -> CategoryMap:
        self.meta, mapping = _meta_from_categories(self.json_path, categories)
        return mapping

    def _meta_from_json_if_any(self) -> DatasetMeta:
        json_path = self.root / f"ade20k_panoptic_{self.split}.json"
        if json_path.is_file():
            categories, _ = parse_panoptic_json(json_path)
            return _meta_from_categories(json_path, categories)[0]
        names = tuple(f"class_{i}" for i in range(ADE20K_NUM_CLASSES))
        return DatasetMeta("ade20k", names, ())

    def _image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}.jpg"

    def _sem_path(self, name: str) -> Path:
        return self.sem_dir / f"{name}.png"

    def _semantic(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self._sem_path(name)
        sem = read_label_png(path, shape)
        bad = (sem != IGNORE_LABEL) & (sem >= self.meta.num_classes)
        if bad.any():
            raise DatasetError(
                f"{path}: class ids {sorted(set(np.unique(sem[bad]).tolist()))[:5]} out of range"
            )
        return sem.astype(np.uint8)

    def _semantic_of_panoptic(
        self, name: str, pan_seg: np.ndarray, segments: Sequence[SegmentInfo]
    ) -> np.ndarray:
        """The prepared semantic PNG when there is one, else the map derived from the segments."""
        sem_path = self._sem_path(name)
        if sem_path.is_file():
            return read_label_png(sem_path, pan_seg.shape).astype(np.uint8)
        return super()._semantic_of_panoptic(name, pan_seg, segments)


def _meta_from_categories(path: Path, categories: list[dict]) -> tuple[DatasetMeta, CategoryMap]:
    ordered = sorted(categories, key=lambda c: int(c["id"]))
    if len(ordered) != ADE20K_NUM_CLASSES:
        raise DatasetError(f"{path}: expected {ADE20K_NUM_CLASSES} categories, found {len(ordered)}")
    mapping = {int(c["id"]): (i, bool(int(c["isthing"]))) for i, c in enumerate(ordered)}
    names = tuple(str(c["name"]) for c in ordered)
    things = tuple(i for i, c in enumerate(ordered) if int(c["isthing"]))
    return DatasetMeta("ade20k", names, things), mapping
