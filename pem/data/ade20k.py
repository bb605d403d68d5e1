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
from pathlib import Path
from typing import Literal

import numpy as np

from pem.data.common import (
    IGNORE_LABEL,
    DatasetError,
    DatasetMeta,
    Sample,
    SegmentInfo,
    check_panoptic_ids,
    parse_panoptic_json,
    read_label_png,
    read_panoptic_png,
    read_rgb,
    require_dir,
    require_file,
    semantic_from_panoptic,
)
from pem.datasets_meta import ADE20K_NUM_CLASSES

Task = Literal["semantic", "panoptic"]

_SPLIT_DIRS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def _resolve_root(root: Path) -> Path:
    require_dir(root, "dataset folder")
    nested = root / "ADEChallengeData2016"
    return nested if nested.is_dir() else root


class ADE20KDataset:
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
            self.names = sorted(p.stem for p in self.image_dir.glob("*.jpg"))
            if not self.names:
                raise DatasetError(f"{self.image_dir}: no *.jpg images found")
            for name in self.names:
                require_file(self.sem_dir / f"{name}.png", "annotation file")
            self.meta = self._meta_from_json_if_any()
        elif task == "panoptic":
            self.json_path = self.root / f"ade20k_panoptic_{self.split}.json"
            self.png_dir = require_dir(self.root / f"ade20k_panoptic_{self.split}", "panoptic folder")
            categories, self.entries = parse_panoptic_json(self.json_path)
            self.meta, self.category_map = _meta_from_categories(self.json_path, categories)
            self.names = sorted(self.entries)
            if not self.names:
                raise DatasetError(f"{self.json_path}: no annotations")
            for name in self.names:
                require_file(self.image_dir / f"{name}.jpg", "image")
        else:
            raise DatasetError(f"{self.root}: unknown task {task!r} (semantic or panoptic)")

    def _meta_from_json_if_any(self) -> DatasetMeta:
        json_path = self.root / f"ade20k_panoptic_{self.split}.json"
        if json_path.is_file():
            categories, _ = parse_panoptic_json(json_path)
            return _meta_from_categories(json_path, categories)[0]
        names = tuple(f"class_{i}" for i in range(ADE20K_NUM_CLASSES))
        return DatasetMeta("ade20k", names, ())

    def __len__(self) -> int:
        return len(self.names)

    def image_path(self, index: int) -> Path:
        """Path of the image of sample ``index``."""
        return self.image_dir / f"{self.names[index]}.jpg"

    def __getitem__(self, index: int) -> Sample:
        name = self.names[index]
        image = read_rgb(self.image_dir / f"{name}.jpg")
        if self.task == "semantic":
            path = self.sem_dir / f"{name}.png"
            sem = read_label_png(path, image.shape[:2])
            bad = (sem != IGNORE_LABEL) & (sem >= self.meta.num_classes)
            if bad.any():
                raise DatasetError(
                    f"{path}: class ids {sorted(set(np.unique(sem[bad]).tolist()))[:5]} out of range"
                )
            return Sample(name, image, sem_seg=sem.astype(np.uint8))
        entry = self.entries[name]
        png = require_file(self.png_dir / entry.file_name, "panoptic PNG")
        pan = read_panoptic_png(png, image.shape[:2])
        segments = []
        for seg in entry.segments:
            if seg["category_id"] not in self.category_map:
                raise DatasetError(f"{self.json_path}: segment {seg['id']} of {name} has unknown category")
            cat, isthing = self.category_map[seg["category_id"]]
            segments.append(SegmentInfo(seg["id"], cat, isthing, bool(seg["iscrowd"])))
        check_panoptic_ids(png, pan, segments)
        sem_path = self.sem_dir / f"{name}.png"
        if sem_path.is_file():
            sem = read_label_png(sem_path, image.shape[:2]).astype(np.uint8)
        else:
            sem = semantic_from_panoptic(pan, segments)
        return Sample(name, image, sem_seg=sem, pan_seg=pan, segments=segments)


def _meta_from_categories(
    path: Path, categories: list[dict]
) -> tuple[DatasetMeta, dict[int, tuple[int, bool]]]:
    ordered = sorted(categories, key=lambda c: int(c["id"]))
    if len(ordered) != ADE20K_NUM_CLASSES:
        raise DatasetError(f"{path}: expected {ADE20K_NUM_CLASSES} categories, found {len(ordered)}")
    mapping = {int(c["id"]): (i, bool(int(c["isthing"]))) for i, c in enumerate(ordered)}
    names = tuple(str(c["name"]) for c in ordered)
    things = tuple(i for i, c in enumerate(ordered) if int(c["isthing"]))
    return DatasetMeta("ade20k", names, things), mapping
