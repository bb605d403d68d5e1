"""Cityscapes readers (semantic and panoptic) on the official directory layout.

Semantic: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with
``gtFine/{split}/{city}/*_gtFine_labelIds.png``; label ids are mapped to the 19 train ids with the
label table of ``cityscapesscripts`` (``cityscapesscripts.helpers.labels``), never retyped here.

Panoptic: the output of ``cityscapesscripts``' ``createPanopticImgs``:
``gtFine/cityscapes_panoptic_{split}.json`` and the PNGs in ``gtFine/cityscapes_panoptic_{split}/``.
Categories are matched by name to the same label table (so the train-id variant
``..._trainId.json`` works too); things are the labels with ``hasInstances``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from contract.vocabulary import Task
from pem.data.common import (
    IGNORE_LABEL,
    CategoryMap,
    DatasetError,
    DatasetMeta,
    FolderDataset,
    read_label_png,
    require_dir,
)

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
COLOR_SUFFIX = "_gtFine_color.png"


def _labels():
    try:
        from cityscapesscripts.helpers import labels
    except ImportError as exc:  # pragma: no cover - dependency of the model/export extras
        raise DatasetError(
            "cityscapesscripts is required for Cityscapes data (pip install cityscapesscripts)"
        ) from exc
    return labels


@lru_cache(maxsize=1)
def cityscapes_meta() -> DatasetMeta:
    """The 19 evaluated classes in train-id order; things are the labels with instances."""
    labels = _labels()
    train = sorted(
        (lab for lab in labels.labels if not lab.ignoreInEval and 0 <= lab.trainId < 255),
        key=lambda lab: lab.trainId,
    )
    if [lab.trainId for lab in train] != list(range(len(train))):  # pragma: no cover - table sanity
        raise DatasetError("cityscapesscripts label table has non-contiguous train ids")
    names = tuple(lab.name for lab in train)
    things = tuple(lab.trainId for lab in train if lab.hasInstances)
    return DatasetMeta("cityscapes", names, things)


@lru_cache(maxsize=1)
def label_id_to_train_id_lut() -> np.ndarray:
    """(256,) ``int32`` look-up table: label id -> train id (255 for ignored, -1 for unknown ids)."""
    lut = np.full(256, -1, dtype=np.int32)
    for lab in _labels().labels:
        if 0 <= lab.id < 256:
            lut[lab.id] = lab.trainId if (0 <= lab.trainId < 255 and not lab.ignoreInEval) else IGNORE_LABEL
    return lut


@lru_cache(maxsize=1)
def train_id_to_label_id_lut() -> np.ndarray:
    """(256,) ``uint8`` look-up table: train id -> label id (what the official evaluators expect)."""
    lut = np.zeros(256, dtype=np.uint8)  # 255 / unknown -> "unlabeled" (0)
    for lab in _labels().labels:
        if 0 <= lab.trainId < 255 and not lab.ignoreInEval:
            lut[lab.trainId] = lab.id
    return lut


def label_ids_to_train_ids(label_ids: np.ndarray, path: Path | None = None) -> np.ndarray:
    """(H, W) Cityscapes label ids -> (H, W) ``uint8`` train ids (255 = ignore).

    Raises :class:`DatasetError` (naming ``path``) on ids that are not in the label table.
    """
    if label_ids.size and (label_ids.min() < 0 or label_ids.max() > 255):
        raise DatasetError(f"{path}: label ids outside 0..255")
    mapped = label_id_to_train_id_lut()[label_ids.astype(np.int64)]
    if (mapped < 0).any():
        bad = sorted({int(v) for v in np.unique(label_ids[mapped < 0])})
        raise DatasetError(f"{path}: unknown Cityscapes label ids {bad[:5]}")
    return mapped.astype(np.uint8)


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) train ids -> (H, W) ``uint8`` label ids (the format of the official evaluation)."""
    return train_id_to_label_id_lut()[np.asarray(train_ids, dtype=np.int64) % 256]


def category_to_train_id(category: dict) -> tuple[int, bool]:
    """Train id and thing flag of a Cityscapes panoptic json category (matched by name)."""
    labels = _labels()
    label = labels.name2label.get(str(category["name"]))
    if label is None or label.ignoreInEval or not 0 <= label.trainId < 255:
        raise KeyError(category["name"])
    return int(label.trainId), bool(label.hasInstances)


def split_name(stem: str) -> tuple[str, str, str]:
    """``city_seq_frame`` -> (city, seq, frame)."""
    parts = stem.split("_")
    if len(parts) < 3:
        raise DatasetError(f"{stem}: not a Cityscapes file name (city_seq_frame_...)")
    return parts[0], parts[1], parts[2]


class CityscapesDataset(FolderDataset):
    """Cityscapes ``split`` of ``root`` for ``task`` ``semantic`` or ``panoptic``.

    ``dataset[i]`` is a :class:`~pem.data.common.Sample`: image (H, W, 3) uint8 RGB, ``sem_seg``
    (H, W) train ids and, for panoptic, ``pan_seg`` (H, W) int32 with its segments (train ids).
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train", task: Task = "semantic"):
        self.root = Path(root)
        self.split = split
        self.task = task
        self.meta = cityscapes_meta()
        require_dir(self.root, "dataset folder")
        image_dir = require_dir(self.root / "leftImg8bit" / split, "image folder")
        if task == "semantic":
            names = sorted(p.name[: -len(IMAGE_SUFFIX)] for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
            empty = f"{image_dir}: no */*{IMAGE_SUFFIX} images found"
            self._set_names(names, empty, self._label_path, "annotation file")
        elif task == "panoptic":
            gt = self.root / "gtFine"
            json_path = gt / f"cityscapes_panoptic_{split}.json"
            self._index_panoptic(json_path, gt / f"cityscapes_panoptic_{split}", self._categories)
        else:
            raise DatasetError(f"{self.root}: unknown task {task!r} (semantic or panoptic)")

    def _categories(self, categories: list[dict]) -> CategoryMap:
        try:
            return {int(c["id"]): category_to_train_id(c) for c in categories}
        except KeyError as exc:
            raise DatasetError(f"{self.json_path}: unknown Cityscapes category {exc}") from None

    def _image_path(self, name: str) -> Path:
        city = split_name(name)[0]
        return self.root / "leftImg8bit" / self.split / city / f"{name}{IMAGE_SUFFIX}"

    def _label_path(self, name: str) -> Path:
        city = split_name(name)[0]
        return self.root / "gtFine" / self.split / city / f"{name}{LABEL_SUFFIX}"

    def _semantic(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self._label_path(name)
        return label_ids_to_train_ids(read_label_png(path, shape), path)


class CityscapesPredictionWriter:
    """Writes predictions in the formats of the official Cityscapes evaluators.

    Semantic: ``{out}/semantic/{name}_pred_labelIds.png`` (label ids, what
    ``evalPixelLevelSemanticLabeling`` reads). Panoptic: ``{out}/cityscapes_panoptic_{split}.json``
    and ``{out}/cityscapes_panoptic_{split}/{name}_panoptic.png`` (COCO panoptic format with label
    ids as categories, what ``evalPanopticSemanticLabeling`` reads). Call :meth:`close` to write
    the json.
    """

    def __init__(self, out_dir: str | os.PathLike[str], split: str = "val"):
        self.out_dir = Path(out_dir)
        self.split = split
        self.annotations: list[dict] = []

    @property
    def semantic_dir(self) -> Path:
        return self.out_dir / "semantic"

    @property
    def panoptic_json(self) -> Path:
        return self.out_dir / f"cityscapes_panoptic_{self.split}.json"

    @property
    def panoptic_dir(self) -> Path:
        return self.out_dir / f"cityscapes_panoptic_{self.split}"

    def add_semantic(self, name: str, train_ids: np.ndarray) -> Path:
        """Write (H, W) predicted train ids of image ``name`` as label ids."""
        from pem.data.common import write_png

        path = self.semantic_dir / f"{name}_pred_labelIds.png"
        write_png(path, train_ids_to_label_ids(train_ids))
        return path

    def add_panoptic(self, name: str, id_map: np.ndarray, segments: list[tuple[int, int]]) -> Path:
        """Write the (H, W) segment-id map and its (segment id, train id) list for image ``name``."""
        from pem.data.common import id_to_rgb, write_png

        lut = train_id_to_label_id_lut()
        path = self.panoptic_dir / f"{name}_panoptic.png"
        write_png(path, id_to_rgb(np.asarray(id_map)))
        info = [{"id": int(i), "category_id": int(lut[int(c)])} for i, c in segments]
        self.annotations.append({"image_id": name, "file_name": path.name, "segments_info": info})
        return path

    def close(self) -> None:
        """Write the panoptic json (if any panoptic prediction was added)."""
        import json

        if not self.annotations:
            return
        labels = _labels()
        categories = [
            {"id": lab.id, "name": lab.name, "isthing": int(lab.hasInstances), "color": list(lab.color)}
            for lab in labels.labels
            if not lab.ignoreInEval
        ]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        data = {"annotations": self.annotations, "categories": categories}
        tmp = self.panoptic_json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.panoptic_json)
