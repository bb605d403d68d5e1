"""Shared pieces of the dataset readers: records, metadata, errors and file I/O.

Every reader returns :class:`Sample` records in the same convention whatever the on-disk format:
RGB ``uint8`` images, semantic maps in *contiguous* class ids (``0..K-1``, ``255`` = ignore) and,
for panoptic data, a segment-id map plus one :class:`SegmentInfo` per segment (contiguous class id,
thing / stuff, crowd flag). Any unreadable or malformed file raises :class:`DatasetError` whose
message is one line that names the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from contract.errors import PemDeployError

IGNORE_LABEL = 255
"""Semantic label of pixels that are not evaluated or supervised."""


class DatasetError(PemDeployError, ValueError):
    """A dataset path is missing or one of its files is unreadable or malformed (message names the file)."""


@dataclass(frozen=True)
class SegmentInfo:
    """One ground-truth panoptic segment.

    ``id`` is its value in the segment-id map, ``category_id`` the contiguous class id (0..K-1).
    Crowd segments (a group of things annotated as one region) are neither trained on nor
    matched by PQ; they only excuse predictions that fall on them.
    """

    id: int
    category_id: int
    isthing: bool
    iscrowd: bool = False


@dataclass
class Sample:
    """One image with its annotations.

    Attributes:
        name: stable identifier (Cityscapes ``city_seq_frame``, ADE20K file stem).
        image: (H, W, 3) ``uint8`` RGB.
        sem_seg: (H, W) ``uint8`` contiguous class ids, 255 = ignore; ``None`` if not annotated.
        pan_seg: (H, W) ``int32`` segment ids (0 = void); ``None`` for semantic-only data.
        segments: the segments of ``pan_seg``.
    """

    name: str
    image: np.ndarray
    sem_seg: np.ndarray | None = None
    pan_seg: np.ndarray | None = None
    segments: list[SegmentInfo] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetMeta:
    """Class metadata of a dataset in contiguous ids."""

    name: str
    class_names: tuple[str, ...]
    thing_ids: tuple[int, ...]
    ignore_label: int = IGNORE_LABEL

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        things = set(self.thing_ids)
        return tuple(i for i in range(self.num_classes) if i not in things)


class SegmentationDataset(Protocol):
    """What the trainer and the evaluator need from a dataset reader."""

    meta: DatasetMeta
    task: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


# ---------------------------------------------------------------------------------------------
# File reading with one-line errors


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else :class:`DatasetError` naming it."""
    if not path.exists():
        raise DatasetError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} is not a directory")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else :class:`DatasetError` naming it."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    return path


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit colour image as (H, W, 3) ``uint8`` RGB."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_png(path: Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A single-channel label PNG (8 or 16 bit) as (H, W) integers, unchanged."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: not a readable label image")
    if image.ndim != 2:
        raise DatasetError(f"{path}: label image must have one channel, found shape {image.shape}")
    if expected_shape is not None and image.shape != tuple(expected_shape):
        raise DatasetError(
            f"{path}: label size {image.shape[1]}x{image.shape[0]} differs from its image "
            f"({expected_shape[1]}x{expected_shape[0]})"
        )
    return image


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic colour encoding: (H, W, 3) RGB -> (H, W) ``int32`` ``R + 256 G + 256^2 B``."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_id`: (H, W) ids -> (H, W, 3) ``uint8`` RGB."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A COCO-format panoptic PNG as an (H, W) ``int32`` segment-id map."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: not a readable panoptic PNG")
    if expected_shape is not None and image.shape[:2] != tuple(expected_shape):
        raise DatasetError(
            f"{path}: panoptic size {image.shape[1]}x{image.shape[0]} differs from its image "
            f"({expected_shape[1]}x{expected_shape[0]})"
        )
    return rgb_to_id(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def read_json(path: Path) -> Any:
    """Parsed JSON, or :class:`DatasetError` naming the file."""
    require_file(path, "annotation file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None


@dataclass(frozen=True)
class PanopticEntry:
    """One image of a COCO-format panoptic json: its PNG and its segments (dataset category ids)."""

    image_id: str
    file_name: str
    segments: tuple[dict[str, Any], ...]


def parse_panoptic_json(path: Path) -> tuple[list[dict[str, Any]], dict[str, PanopticEntry]]:
    """Categories and per-image annotations (keyed by ``image_id``) of a COCO panoptic json."""
    data = read_json(path)
    try:
        categories = list(data["categories"])
        entries: dict[str, PanopticEntry] = {}
        for ann in data["annotations"]:
            segments = tuple(
                {
                    "id": int(s["id"]),
                    "category_id": int(s["category_id"]),
                    "iscrowd": int(s.get("iscrowd", 0)),
                }
                for s in ann["segments_info"]
            )
            entries[str(ann["image_id"])] = PanopticEntry(
                str(ann["image_id"]), str(ann["file_name"]), segments
            )
        for cat in categories:
            int(cat["id"]), str(cat["name"]), int(cat["isthing"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed panoptic annotations (bad or missing field {exc})") from None
    return categories, entries


def check_panoptic_ids(path: Path, pan_seg: np.ndarray, segments: Sequence[SegmentInfo]) -> None:
    """Every non-zero id of the PNG must be a listed segment (COCO panoptic rule)."""
    known = {s.id for s in segments}
    present = np.unique(pan_seg)
    unknown = [int(v) for v in present if v != 0 and int(v) not in known]
    if unknown:
        raise DatasetError(f"{path}: segment ids {unknown[:5]} are in the PNG but not in the json")


def semantic_from_panoptic(pan_seg: np.ndarray, segments: Sequence[SegmentInfo]) -> np.ndarray:
    """(H, W) contiguous semantic map of a panoptic annotation (void -> 255; crowd keeps its class)."""
    sem = np.full(pan_seg.shape, IGNORE_LABEL, dtype=np.uint8)
    for seg in segments:
        sem[pan_seg == seg.id] = seg.category_id
    return sem


# ---------------------------------------------------------------------------------------------
# Reader skeleton

CategoryMap = dict[int, tuple[int, bool]]
"""Dataset category id -> (contiguous class id, is thing)."""


class FolderDataset:
    """Skeleton of the on-disk readers: sample names, image paths and COCO panoptic json + PNG samples.

    A subclass sets ``root``, ``task`` (``"semantic"`` / ``"panoptic"``), ``meta`` and, through
    :meth:`_set_names` / :meth:`_index_panoptic`, the sample names; it implements :meth:`_image_path`
    and :meth:`_semantic`, and may override :meth:`_semantic_of_panoptic`.
    """

    root: Path
    task: str
    meta: DatasetMeta
    names: list[str]
    json_path: Path
    png_dir: Path
    entries: dict[str, PanopticEntry]
    category_map: CategoryMap

    def _image_path(self, name: str) -> Path:
        """Image file of sample ``name``."""
        raise NotImplementedError

    def _semantic(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """(H, W) ``uint8`` contiguous semantic map of sample ``name`` (a semantic-task sample)."""
        raise NotImplementedError

    def _semantic_of_panoptic(
        self, name: str, pan_seg: np.ndarray, segments: Sequence[SegmentInfo]
    ) -> np.ndarray:
        """(H, W) semantic map of a panoptic sample: derived from its segments unless overridden."""
        return semantic_from_panoptic(pan_seg, segments)

    def _set_names(self, names: list[str], empty: str, required: Callable[[str], Path], what: str) -> None:
        """Set the sample names; raise ``empty`` if there are none, and require ``required(name)`` of each."""
        self.names = names
        if not names:
            raise DatasetError(empty)
        for name in names:
            require_file(required(name), what)

    def _index_panoptic(
        self, json_path: Path, png_dir: Path, category_map: Callable[[list[dict[str, Any]]], CategoryMap]
    ) -> None:
        """Read the panoptic json (categories mapped by ``category_map``) and name its samples."""
        self.json_path = json_path
        self.png_dir = require_dir(png_dir, "panoptic folder")
        categories, self.entries = parse_panoptic_json(json_path)
        self.category_map = category_map(categories)
        self._set_names(sorted(self.entries), f"{json_path}: no annotations", self._image_path, "image")

    def __len__(self) -> int:
        return len(self.names)

    def image_path(self, index: int) -> Path:
        """Path of the image of sample ``index``."""
        return self._image_path(self.names[index])

    def __getitem__(self, index: int) -> Sample:
        name = self.names[index]
        image = read_rgb(self._image_path(name))
        if self.task == "semantic":
            return Sample(name, image, sem_seg=self._semantic(name, image.shape[:2]))
        entry = self.entries[name]
        png = require_file(self.png_dir / entry.file_name, "panoptic PNG")
        pan = read_panoptic_png(png, image.shape[:2])
        segments = []
        for seg in entry.segments:
            if seg["category_id"] not in self.category_map:
                raise DatasetError(f"{self.json_path}: segment {seg['id']} of {name} has unknown category")
            class_id, isthing = self.category_map[seg["category_id"]]
            segments.append(SegmentInfo(seg["id"], class_id, isthing, bool(seg["iscrowd"])))
        check_panoptic_ids(png, pan, segments)
        sem = self._semantic_of_panoptic(name, pan, segments)
        return Sample(name, image, sem_seg=sem, pan_seg=pan, segments=segments)


# ---------------------------------------------------------------------------------------------
# Writing


def write_png(path: Path, array: np.ndarray) -> None:
    """Write an (H, W) label map (uint8 / uint16) or an (H, W, 3) RGB image as PNG (atomically)."""
    from contract.fs import atomic_write_bytes

    data = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, buffer = cv2.imencode(".png", data)
    if not ok:
        raise DatasetError(f"{path}: could not encode PNG of shape {array.shape} and dtype {array.dtype}")
    # Not cv2.imwrite: on a full disk it reports success and leaves a 0-byte file.
    atomic_write_bytes(path, buffer.tobytes())


@contextmanager
def atomic_directory(target: Path, inputs: Iterable[str | os.PathLike[str]] = ()) -> Iterator[Path]:
    """Build a new folder: yields its staging folder, renamed to ``target`` on success.

    ``target`` must not exist or be an empty folder; on any error nothing is left behind
    (:mod:`contract.output` writes it; ``inputs`` are never written).
    """
    from contract.output import OutputExistsError, is_internal, staged_folder

    target = Path(target)
    if target.exists() and (not target.is_dir() or any(not is_internal(p.name) for p in target.iterdir())):
        raise OutputExistsError(f"{target}: already exists and is not an empty directory")
    with staged_folder(target, inputs=inputs) as out:
        yield out.staging
        out.register_tree()


@contextmanager
def staged_directory(
    target: Path,
    *,
    exist_ok: bool = False,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[Path]:
    """Write files into a staging folder (yielded); on success they are moved into ``target``.

    By the rules of :mod:`contract.output`: a ``target`` holding files pem-deploy did not write
    needs ``exist_ok`` (then ours are added beside them), a foreign file at one of our names
    needs ``overwrite``, ``inputs`` are never written, and on any error (a full disk, a
    read-only folder) ``target`` is left as it was.
    """
    from contract.output import staged_folder

    with staged_folder(target, exist_ok=exist_ok, overwrite=overwrite, inputs=inputs) as out:
        yield out.staging
        out.register_tree()
