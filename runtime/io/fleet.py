"""Segment a fleet's recordings on a Ray cluster (``pem-deploy infer ARTIFACT INPUT... --ray [ADDRESS]``).

The inputs (ROS 2 bags, videos, image folders or image files, or list files naming them one per
line) are planned into *shards*: one per bag, one per video, one per slice of
``images_per_shard`` images of a folder. Ray Data streams the shards through a pool of
``workers`` actors (``map_batches`` with a callable class): each actor opens one
:class:`~runtime.core.segmenter.Segmenter` once (``gpus_per_worker`` GPUs each), reads its shard where
it runs (every path, inputs and ``out``, must be visible at the same name on every node: a shared
file system), segments ``batch`` frames per model call and writes the shard with the
single-machine writers, so the outputs are the same files ``pem-deploy infer`` writes:

- a bag ``OUT/<bag name>/segmentation.mcap`` (:func:`runtime.io.ros.bags.write_bag`: same topics,
  stamps and headers as ``infer BAG --topic T --out seg.mcap``);
- for a video ``OUT/<video name>/`` and for an image folder ``OUT/<folder name>/part-NNNNN/``, the
  folder :func:`runtime.io.batch_infer.infer_path` writes (``labels/``, ``panoptic/``, ``overlay/``,
  ``predictions.json``, names relative to the input as in ``infer``);
- in each shard folder ``frames.parquet`` (its frames' index rows) and ``.pem-fleet-shard.json``.

Every shard folder is written through :func:`contract.output.staged_folder`: staged beside its
target and renamed into place as one folder, so a killed run leaves no partial shard output (the
next run removes the staging of dead processes). The driver records finished and failed shards in
``OUT/fleet-manifest.json``; a re-run with the same inputs and settings skips the finished ones
and retries the failed ones. At the end it writes ``OUT/index.parquet``: one row per frame of every
finished shard of this run's inputs (:data:`INDEX_COLUMNS`), and with ``keep_uncertain`` the input
frames of the lowest-margin fraction to ``OUT/uncertain/``.

On several nodes, stale staging is recognised by its writer's process id (:mod:`contract.fs`),
which is only meaningful on the node that wrote it: a worker may remove another node's live
staging, and that shard then fails with a file error and is redone by the next run.

Ray is the optional ``fleet`` extra; without it :class:`RayMissingError` says how to install it.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import numpy as np

from contract.errors import PemDeployError, one_line
from contract.fs import atomic_write_bytes, sha256_file
from contract.output import (
    _Lock,
    clean_stale_staging,
    discard_folder,
    guard_inputs,
    is_internal,
    staged_folder,
)
from runtime.core.artifact import load_artifact
from runtime.core.segmenter import Result, Segmenter, read_video
from runtime.errors import InputError, RuntimeToolError
from runtime.io.batch_infer import PREDICTIONS, infer_path
from runtime.io.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_images, load_image, write_image
from runtime.io.ros.bags import BagFrame, BagReader, is_bag, write_bag
from runtime.io.ros.messages import output_topics
from runtime.io.sources import ProgressLine

INSTALL_HINT = "pip install 'pem-deploy[fleet]' (or: pip install 'ray[data]' pyarrow)"
MANIFEST = "fleet-manifest.json"
INDEX = "index.parquet"
UNCERTAIN = "uncertain"
FRAMES = "frames.parquet"
SHARD_MARKER = ".pem-fleet-shard.json"
BAG_FILE = "segmentation.mcap"
LIST_SUFFIXES = (".txt", ".list")
_TOOL = "pem-deploy fleet"
_MANIFEST_FORMAT = "pem-deploy-fleet-manifest"

#: Columns of ``index.parquet`` (one row per frame; ``None`` where a field does not apply).
INDEX_COLUMNS = (
    "source",  # the input (absolute path)
    "shard",  # the shard's key: the input, plus '#start-end' for a slice of an image folder
    "kind",  # bag | video | images
    "frame",  # name within the input: 'a/x.png', 'clip.mp4/000003', '/cam/image_raw/000003'
    "index",  # position in the shard's frame order
    "topic",  # bag topic (bags)
    "stamp_ns",  # bag (log) time of the message, ns (bags)
    "header_stamp_ns",  # header.stamp of the message, ns (bags)
    "frame_id",  # header.frame_id (bags)
    "output",  # labels PNG or output bag, relative to OUT
    "output_topic",  # labels topic in the output bag (bags)
    "height",
    "width",
    "class_pixels",  # pixels per class id (list, index = class id)
    "void_pixels",  # pixels with no class (panoptic void)
    "margin",  # mean confidence margin (best - second class score), raw heads only
    "read_ms",  # reading and decoding the frame on the worker
    "pre_ms",
    "infer_ms",
    "post_ms",
    "error",  # why the frame was skipped (unreadable image), else None
)

T = TypeVar("T")
Progress = Callable[["FleetProgress"], None]


class FleetError(RuntimeToolError):
    """The fleet run cannot start or go on (bad input list, foreign output folder, Ray failure)."""


class RayMissingError(FleetError):
    """Ray (or pyarrow) is not installed: the ``fleet`` extra."""


def import_ray() -> Any:
    """The ``ray`` module (with Ray Data and pyarrow importable), or :class:`RayMissingError`."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "ray"
        raise RayMissingError(
            f"--ray needs Ray Data and pyarrow ({missing} is not installed): {INSTALL_HINT}"
        ) from None
    return ray


# -- planning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """One unit of work: a bag, a video, or a slice of an image folder (``names`` relative to it)."""

    key: str
    kind: str  # bag | video | images
    source: str
    output: str  # folder relative to OUT
    topics: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    total: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Shard:
        data = json.loads(text)
        data["topics"], data["names"] = tuple(data["topics"]), tuple(data["names"])
        return cls(**data)


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Inputs with list files (``.txt`` / ``.list``: one path a line, ``#`` comments, relative to
    the list's folder) replaced by their entries; each as an absolute path, duplicates dropped."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            try:
                lines = path.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise FleetError(f"{path}: cannot read the input list ({exc})") from None
            for line in lines:
                entry = line.strip()
                if entry and not entry.startswith("#"):
                    target = Path(entry)
                    paths.append(target if target.is_absolute() else path.parent / target)
        else:
            paths.append(path)
    return list(dict.fromkeys(Path(os.path.abspath(p)) for p in paths))


def plan_shards(
    inputs: Iterable[str | os.PathLike[str]], topics: Sequence[str] = (), images_per_shard: int = 256
) -> list[Shard]:
    """The shards of ``inputs`` in a stable order (same inputs, same shards: what resuming relies on).

    Lists image folders and reads the bags' and videos' frame counts here, on the driver (for
    progress); the frames themselves are read on the workers. Raises :class:`InputError` naming
    an input that is missing or of an unknown kind.
    """
    if images_per_shard < 1:
        raise InputError(f"images_per_shard {images_per_shard}: must be >= 1")
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no inputs given")
    names = [p.name for p in paths]
    shards: list[Shard] = []
    for path in paths:
        label = path.name
        if names.count(label) > 1:  # same name in two folders: keep both outputs apart
            label = f"{label}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        if is_bag(path):
            if not topics:
                raise InputError(f"{path}: is a ROS 2 bag; give the image topic(s) to segment with --topic")
            shards.append(
                Shard(str(path), "bag", str(path), label, tuple(topics), total=_bag_total(path, topics))
            )
        elif path.is_dir():
            files = [p.relative_to(path).as_posix() for p in list_images(path)]
            for start in range(0, len(files), images_per_shard):
                part = tuple(files[start : start + images_per_shard])
                end = start + len(part)
                shards.append(
                    Shard(
                        f"{path}#{start}-{end}",
                        "images",
                        str(path),
                        f"{label}/part-{start // images_per_shard:05d}",
                        names=part,
                        total=len(part),
                    )
                )
        elif not path.exists():
            raise InputError(f"{path}: no such file or folder")
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            shards.append(Shard(str(path), "video", str(path), label, total=_video_total(path)))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            shards.append(Shard(str(path), "images", str(path.parent), label, names=(path.name,), total=1))
        else:
            raise InputError(
                f"{path}: not a bag (.mcap, .db3, bag folder), video ({', '.join(VIDEO_SUFFIXES)}), image, "
                f"image folder or input list ({', '.join(LIST_SUFFIXES)})"
            )
    return shards


def _bag_total(path: Path, topics: Sequence[str]) -> int | None:
    try:
        with BagReader(path, topics) as reader:
            return reader.total
    except InputError:
        return None  # a corrupt bag fails on its worker, where it is recorded with its error


def _video_total(path: Path) -> int | None:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()
    return count if count > 0 else None


# -- one shard, on a worker -----------------------------------------------------------------------


@dataclass
class _Row:
    frame: str
    index: int
    height: int = 0
    width: int = 0
    read_ms: float = 0.0
    topic: str | None = None
    stamp_ns: int | None = None
    header_stamp_ns: int | None = None
    frame_id: str | None = None
    result: Result | None = None
    error: str | None = None


class _BatchingSegmenter:
    """Stands in for the :class:`Segmenter` inside the single-machine writers (``write_bag``,
    ``infer_path``): :meth:`feed` segments the frames ``batch`` at a time ahead of the writer,
    and :meth:`predict` hands the writer each frame's result, so the files are written by the
    same code as on one machine while the model runs batched; every result is kept for the index."""

    def __init__(self, segmenter: Segmenter, batch: int, on_frames: Callable[[int], None] | None):
        self.artifact = segmenter.artifact
        self._segmenter = segmenter
        self._batch = batch
        self._on_frames = on_frames
        self._pending: deque[tuple[np.ndarray, Result]] = deque()
        self.rows: list[_Row] = []

    def feed(
        self,
        frames: Iterable[T],
        describe: Callable[[T, int], tuple[_Row, np.ndarray | None]],
        skip_bad: bool = False,
    ) -> Iterator[T]:
        """``frames`` again, each yielded after its result is ready; ``describe(frame, index)``
        gives its index row and image (``None``: unreadable, the row says why). ``skip_bad``
        leaves frames the model refuses out (image folders) instead of failing the shard."""
        source = iter(frames)
        index = 0
        while True:
            chunk: list[tuple[T, _Row, np.ndarray]] = []
            while len(chunk) < self._batch:
                start = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    break
                row, image = describe(item, index)
                row.read_ms = (time.perf_counter() - start) * 1e3
                index += 1
                if image is None:
                    self.rows.append(row)
                    continue
                row.height, row.width = image.shape[:2]
                chunk.append((item, row, image))
            if not chunk:
                return
            results = self._predict(
                [image for _, _, image in chunk], [r.frame for _, r, _ in chunk], skip_bad
            )
            for (item, row, image), result in zip(chunk, results):
                self.rows.append(row)
                if isinstance(result, str):
                    row.error = result
                    continue
                row.result = result
                self._pending.append((image, result))
                yield item
            if self._on_frames is not None:
                self._on_frames(len(chunk))

    def _predict(self, images: list[np.ndarray], names: list[str], skip_bad: bool) -> list[Result | str]:
        try:
            return list(self._segmenter.predict_batch(images, names))
        except InputError:
            if not skip_bad:
                raise
        outcomes: list[Result | str] = []  # find the refused image(s); the others still count
        for image, name in zip(images, names):
            try:
                outcomes.append(self._segmenter.predict(image, name))
            except InputError as exc:
                outcomes.append(one_line(exc))
        return outcomes

    def predict(self, image: np.ndarray, name: str = "image") -> Result:
        expected, result = self._pending.popleft()
        if expected is not image:
            raise RuntimeError(f"{name}: frames reached the writer out of order")
        return result


def run_shard(
    segmenter: Segmenter,
    shard: Shard,
    out: str | os.PathLike[str],
    overlays: bool = True,
    alpha: float = 0.5,
    batch: int = 8,
    on_frames: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Segment and write one shard into ``out / shard.output`` (one staged folder, renamed into place).

    Returns ``{"key", "status": "done" | "failed", "frames", "skipped", "error", "seconds"}``;
    a failure (corrupt bag, unreadable video, output in the way) is returned, not raised, so the
    other shards go on.
    """
    out = Path(out)
    start = time.perf_counter()
    outcome: dict[str, Any] = {"key": shard.key, "status": "failed", "frames": 0, "skipped": 0, "error": None}
    artifact = segmenter.artifact
    inputs = [shard.source, artifact.model_path, artifact.sidecar_path]
    try:
        batcher = _BatchingSegmenter(segmenter, batch, on_frames)
        with staged_folder(out / shard.output, inputs=inputs) as folder:
            outputs = _write_shard(batcher, shard, folder.staging, overlays, alpha)
            folder.register_tree()  # what write_bag / infer_path wrote into the staging
            table = _index_table(shard, batcher.rows, outputs, segmenter)
            folder.write(FRAMES, _parquet_bytes(table))
            folder.write(SHARD_MARKER, json.dumps({"tool": _TOOL, "shard": shard.key}))
        done = sum(1 for r in batcher.rows if r.result is not None)
        outcome.update(status="done", frames=done, skipped=len(batcher.rows) - done)
    except PemDeployError as exc:
        outcome["error"] = one_line(exc)
    except OSError as exc:
        outcome["error"] = one_line(f"{exc.filename or shard.source}: {exc.strerror or exc}")
    except Exception as exc:  # a bug or a library failure in one shard must not stop the others
        outcome["error"] = one_line(f"{shard.source}: {type(exc).__name__}: {exc}")
    outcome["seconds"] = time.perf_counter() - start
    return outcome


def _write_shard(
    batcher: _BatchingSegmenter, shard: Shard, tree: Path, overlays: bool, alpha: float
) -> dict[str, str]:
    """Write the shard's outputs into the (existing) staging folder ``tree`` with the
    single-machine writers; return each frame's labels output, relative to it."""
    source = Path(shard.source)
    if shard.kind == "bag":
        counters: dict[str, int] = {}

        def describe_bag(frame: BagFrame, index: int) -> tuple[_Row, np.ndarray]:
            n = counters.get(frame.topic, 0)
            counters[frame.topic] = n + 1
            stamp = frame.header.stamp
            row = _Row(f"{frame.topic}/{n:06d}", index, topic=frame.topic, stamp_ns=frame.timestamp)
            row.header_stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
            row.frame_id = frame.header.frame_id
            return row, frame.image

        with BagReader(source, shard.topics) as reader:
            frames = batcher.feed(reader, describe_bag)
            write_bag(batcher, frames, tree / BAG_FILE, overlays=overlays, alpha=alpha)  # type: ignore[arg-type]
        return {r.frame: BAG_FILE for r in batcher.rows}

    if shard.kind == "video":
        named: Iterable[tuple[str, np.ndarray]] = (
            (f"{source.name}/{i:06d}", image) for i, image in enumerate(read_video(source))
        )
        skip_bad = False
    else:

        def load(name: str) -> tuple[str, np.ndarray | str | None]:
            try:
                return name, load_image(source / name).image
            except InputError as exc:
                return name, one_line(exc)

        named = (load(name) for name in shard.names)  # type: ignore[misc]
        skip_bad = True

    def describe(item: tuple[str, Any], index: int) -> tuple[_Row, np.ndarray | None]:
        name, image = item
        if isinstance(image, str):
            return _Row(name, index, error=image), None
        return _Row(name, index), image

    frames = batcher.feed(named, describe, skip_bad)
    infer_path(batcher, source, tree, overlays, alpha, frames=frames, total=shard.total)  # type: ignore[arg-type]
    predictions = json.loads((tree / PREDICTIONS).read_text())["predictions"]
    return {p["name"]: p["outputs"]["labels"] for p in predictions}


def _index_table(shard: Shard, rows: list[_Row], outputs: dict[str, str], segmenter: Segmenter) -> Any:
    import pyarrow as pa

    classes = segmenter.artifact.num_classes
    columns: dict[str, list[Any]] = {name: [] for name in INDEX_COLUMNS}
    for row in sorted(rows, key=lambda r: r.index):  # skipped frames were recorded first
        result = row.result
        histogram, void = None, None
        if result is not None:
            counts = np.bincount(result.labels.ravel().astype(np.int64), minlength=classes)
            histogram, void = counts[:classes].tolist(), int(counts[classes:].sum())
        output = outputs.get(row.frame) if result is not None else None
        values = {
            "source": shard.source if shard.kind != "images" else f"{shard.source}/{row.frame}",
            "shard": shard.key,
            "kind": shard.kind,
            "frame": row.frame,
            "index": row.index,
            "topic": row.topic,
            "stamp_ns": row.stamp_ns,
            "header_stamp_ns": row.header_stamp_ns,
            "frame_id": row.frame_id,
            "output": f"{shard.output}/{output}" if output else None,
            "output_topic": output_topics(row.topic).labels if row.topic and result is not None else None,
            "height": row.height,
            "width": row.width,
            "class_pixels": histogram,
            "void_pixels": void,
            "margin": result.margin if result is not None else None,
            "read_ms": row.read_ms,
            "pre_ms": result.timings.get("pre") if result is not None else None,
            "infer_ms": result.timings.get("infer") if result is not None else None,
            "post_ms": result.timings.get("post") if result is not None else None,
            "error": row.error,
        }
        for name in INDEX_COLUMNS:
            columns[name].append(values[name])
    return pa.table(columns, schema=_index_schema())


def _index_schema() -> Any:
    import pyarrow as pa

    types = {
        "index": pa.int64(),
        "stamp_ns": pa.int64(),
        "header_stamp_ns": pa.int64(),
        "height": pa.int32(),
        "width": pa.int32(),
        "class_pixels": pa.list_(pa.int64()),
        "void_pixels": pa.int64(),
        "margin": pa.float64(),
        "read_ms": pa.float64(),
        "pre_ms": pa.float64(),
        "infer_ms": pa.float64(),
        "post_ms": pa.float64(),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in INDEX_COLUMNS])


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


class ShardWorker:
    """The Ray Data callable class: one per actor, one :class:`Segmenter` opened once per actor."""

    def __init__(
        self,
        artifact: str,
        out: str,
        segmenter_options: dict[str, Any],
        overlays: bool,
        alpha: float,
        batch: int,
        counter: Any = None,
    ):
        self.segmenter = Segmenter.open(artifact, **segmenter_options)
        self.out, self.overlays, self.alpha, self.batch = out, overlays, alpha, batch
        self.counter = counter

    def _count(self, frames: int) -> None:
        if self.counter is not None:
            self.counter.add.remote(frames)  # fire and forget: progress only

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for text in batch["shard"]:
            shard = Shard.from_json(str(text))
            outcome = run_shard(
                self.segmenter, shard, self.out, self.overlays, self.alpha, self.batch, self._count
            )
            results.append(json.dumps(outcome))
        return {"outcome": np.array(results, dtype=object)}


class _FrameCounter:
    """A tiny Ray actor the workers add their frame counts to, for the driver's progress line."""

    def __init__(self) -> None:
        self.frames = 0

    def add(self, frames: int) -> None:
        self.frames += frames

    def get(self) -> int:
        return self.frames


# -- the driver -------------------------------------------------------------------------------------


@dataclass
class FleetProgress:
    """What the driver knows mid-run: frames done of this run's total, shards done and failed."""

    frames: int = 0
    total: int | None = 0
    shards_done: int = 0
    shards_failed: int = 0
    shards_total: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        total = self.total if self.total is not None else "?"
        return (
            f"{self.frames}/{total} frames  {self.fps:.1f} FPS  shards "
            f"{self.shards_done}/{self.shards_total} done, {self.shards_failed} failed"
        )


class ProgressPrinter(ProgressLine):
    """:class:`FleetProgress` on one refreshed line on a TTY, else a line every ``every`` seconds."""

    def __init__(self, stream: TextIO | None = None, every: float = 5.0):
        super().__init__(stream, every)
        self.state = FleetProgress()

    # Not ``update``: that is StatusLine's ``update(text)``, which ``ProgressLine.__call__`` uses.
    def show(self, state: FleetProgress) -> None:
        """Take ``state`` and show it (a line when due off a terminal)."""
        self.state = state
        self(state.frames, state.total)

    def text(self, done: int, total: int | None) -> str:
        return self.state.text()

    def finish(self) -> None:
        """End the refreshed line (TTY), or print the final state (a log)."""
        if self.tty:
            super().finish()
        else:
            self.stream.write(self.state.text() + "\n")
            self.stream.flush()


@dataclass(frozen=True)
class FleetSummary:
    """What :func:`segment` did: frames in the index, shards done / skipped as finished / failed."""

    out_dir: Path
    frames: int
    shards: int
    resumed: int
    failed: tuple[tuple[str, str], ...]
    skipped_frames: int
    seconds: float
    index: Path
    uncertain: int = 0


def _settings(
    artifact: Path, topics: Sequence[str], overlays: bool, alpha: float, resize: str, keep_uncertain: bool
) -> dict[str, Any]:
    loaded = load_artifact(artifact)
    if keep_uncertain and loaded.head != "raw":
        raise InputError(
            f"{loaded.model_path}: --keep-uncertain needs confidence margins, which only 'raw' head "
            f"artifacts give (this one is {loaded.head!r}; export with --head raw)"
        )
    return {
        "artifact": str(loaded.model_path),
        "model_sha256": sha256_file(loaded.model_path),
        "topics": list(topics),
        "overlays": overlays,
        "alpha": alpha,
        "resize": resize,
    }


def _read_manifest(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest of an earlier run into ``out`` (same settings), a new one for an empty ``out``;
    refuses a non-empty folder that is not ours and one written with other settings."""
    path = out / MANIFEST
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            manifest = None
        if not (isinstance(manifest, dict) and manifest.get("format") == _MANIFEST_FORMAT):
            raise FleetError(f"{path}: exists and is not a pem-deploy fleet manifest; choose another --out")
        if manifest.get("settings") != settings:
            differ = sorted(k for k in settings if manifest.get("settings", {}).get(k) != settings[k])
            raise FleetError(
                f"{out}: holds a fleet run with other settings ({', '.join(differ)}); resume it with the "
                "same artifact and options, or choose another --out"
            )
        return manifest
    present = sorted(e.name for e in out.iterdir() if not is_internal(e.name))
    if present:
        shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
        raise FleetError(
            f"{out}: output folder is not empty ({shown}) and holds no {MANIFEST}; choose a new folder"
        )
    return {"format": _MANIFEST_FORMAT, "version": 1, "settings": settings, "shards": {}}


def _finished_on_disk(out: Path, shard: Shard) -> bool:
    """A shard folder renamed into place by a run killed before it could update the manifest."""
    try:
        marker = json.loads((out / shard.output / SHARD_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("tool") == _TOOL and marker.get("shard") == shard.key


def segment(
    artifact: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    topics: Sequence[str] = (),
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    batch: int = 8,
    images_per_shard: int = 256,
    overlays: bool = True,
    alpha: float = 0.5,
    resize: str = "stretch",
    providers: list[str] | None = None,
    threads: int | None = None,
    backend: str | None = None,
    keep_uncertain: float | None = None,
    progress: Callable[[FleetProgress], None] | None = None,
    every: float = 1.0,
) -> FleetSummary:
    """Segment ``inputs`` on Ray into ``out`` (see the module docstring); resumes an earlier run.

    ``address``: ``None`` starts a local Ray cluster (or uses the one this process already
    joined); ``auto`` or ``ray://host:port`` joins an existing one. ``workers`` actors with
    ``gpus_per_worker`` GPUs and ``cpus_per_worker`` CPUs each (``threads`` onnxruntime threads,
    default the CPUs); ``batch`` frames per model call. ``keep_uncertain`` (0 < Q <= 1) writes
    the input frames whose margin is in the lowest Q fraction to ``out/uncertain/``.
    ``progress`` is called every ``every`` seconds. Failed shards are in ``FleetSummary.failed``.
    """
    ray = import_ray()
    _check_counts(workers, batch, images_per_shard, gpus_per_worker, cpus_per_worker, keep_uncertain)
    started = time.perf_counter()
    out = Path(os.path.abspath(out))
    artifact_path = Path(os.path.abspath(artifact))
    settings = _settings(artifact_path, topics, overlays, alpha, resize, keep_uncertain is not None)
    shards = plan_shards(inputs, topics, images_per_shard)
    guard_inputs([out], [*(s.source for s in shards), artifact_path])
    if out.exists() and not out.is_dir():
        raise FleetError(f"{out}: --out exists and is not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = _Lock(out)
    try:
        clean_stale_staging(out)
        manifest = _read_manifest(out, settings)
        recorded = manifest["shards"]
        todo = _shards_to_do(out, shards, recorded)
        _write_manifest(out, manifest)
        state = FleetProgress(total=_sum_totals(todo), shards_total=len(todo))
        if todo:
            options = _segmenter_options(providers, threads or max(1, int(cpus_per_worker)), resize, backend)
            job = _RayJob(
                artifact_path, out, options, overlays, alpha, batch, workers, gpus_per_worker, cpus_per_worker
            )
            _run_on_ray(ray, address, job, todo, manifest, state, progress, every)
        for shard in todo:  # defensive: every shard has a recorded outcome
            recorded.setdefault(shard.key, {"status": "failed", "error": "no result came back from Ray"})
        index, frames, skipped = _write_index(out, shards, recorded)
        kept = _keep_uncertain(out, shards, index, keep_uncertain) if keep_uncertain else 0
        failed = tuple(
            (s.key, recorded[s.key]["error"]) for s in shards if recorded[s.key]["status"] == "failed"
        )
        return FleetSummary(
            out,
            frames,
            len(shards),
            len(shards) - len(todo),
            failed,
            skipped,
            time.perf_counter() - started,
            out / INDEX,
            kept,
        )
    finally:
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()


def _segmenter_options(
    providers: list[str] | None, threads: int, resize: str, backend: str | None
) -> dict[str, Any]:
    """The keywords each worker opens its :class:`Segmenter` with."""
    options: dict[str, Any] = {"providers": providers, "threads": threads, "resize": resize}
    if backend:
        options["backend"] = backend
    return options


def _check_counts(
    workers: int,
    batch: int,
    images_per_shard: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
    keep_uncertain: float | None,
) -> None:
    for name, value, low in (
        ("workers", workers, 1),
        ("batch", batch, 1),
        ("images_per_shard", images_per_shard, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise InputError(f"{name} {value}: must be an integer >= {low}")
    if gpus_per_worker < 0 or cpus_per_worker < 0:
        raise InputError("gpus_per_worker and cpus_per_worker must be >= 0")
    if keep_uncertain is not None and not 0 < keep_uncertain <= 1:
        raise InputError(f"--keep-uncertain {keep_uncertain}: must be a fraction in (0, 1]")


def _shards_to_do(out: Path, shards: Sequence[Shard], recorded: dict[str, Any]) -> list[Shard]:
    """The shards not done yet; outputs a killed run finished but could not record are recorded
    as done first."""
    for shard in shards:
        if recorded.get(shard.key, {}).get("status") != "done" and _finished_on_disk(out, shard):
            recorded[shard.key] = {
                "status": "done",
                "output": shard.output,
                "frames": None,
                "error": None,
            }
    return [s for s in shards if recorded.get(s.key, {}).get("status") != "done"]


def _sum_totals(shards: Sequence[Shard]) -> int | None:
    totals = [s.total for s in shards]
    return None if any(t is None for t in totals) else sum(totals)  # type: ignore[misc]


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def looks_like_address(address: str) -> bool:
    """Whether ``address`` can be a Ray address (``local``, ``auto``, ``ray://host:port``,
    ``host:port``), not an input path that ``--ray`` swallowed."""
    if address in ("local", "auto") or "://" in address:
        return True
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and "/" not in host


def _connect(ray: Any, address: str | None) -> bool:
    """Join or start a Ray cluster; True if this call started the session (and must end it)."""
    if ray.is_initialized():
        return False
    import logging

    # Ray's own notices would bury the progress lines; failures reach us as exceptions anyway.
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
    if address is not None:
        kwargs = {"address": address, "logging_level": logging.ERROR}
    try:
        ray.init(**kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: one line naming the address
        raise FleetError(one_line(f"Ray cluster {address or '(local)'}: cannot connect ({exc})")) from None
    return True


@dataclass(frozen=True)
class _RayJob:
    """What every worker of one run is given: the artifact, the output folder, the segmenter's
    options, the outputs wanted, and each worker's batch and resources."""

    artifact: Path
    out: Path
    options: dict[str, Any]
    overlays: bool
    alpha: float
    batch: int
    workers: int
    gpus_per_worker: float
    cpus_per_worker: float


def _run_on_ray(
    ray: Any,
    address: str | None,
    job: _RayJob,
    todo: list[Shard],
    manifest: dict[str, Any],
    state: FleetProgress,
    progress: Callable[[FleetProgress], None] | None,
    every: float,
) -> None:
    host_print = builtins.print
    started_here = _connect(ray, address)
    _quiet_ray_data(ray)
    stop = threading.Event()
    reporter: threading.Thread | None = None
    start = time.perf_counter()
    try:
        counter = ray.remote(num_cpus=0)(_FrameCounter).remote()

        def report() -> None:
            while not stop.wait(every):
                with contextlib.suppress(Exception):
                    state.frames = max(state.frames, ray.get(counter.get.remote(), timeout=5))
                state.seconds = time.perf_counter() - start
                if progress:
                    progress(state)

        reporter = threading.Thread(target=report, name="fleet-progress", daemon=True)
        reporter.start()
        dataset = _shard_dataset(ray, job, todo, counter)
        finished_frames = 0
        try:
            for row in dataset.iter_rows():
                finished_frames += _record_outcome(job.out, todo, manifest, state, row)
                state.frames = max(state.frames, finished_frames)
        except Exception as exc:  # actor start-up (bad artifact on a node) or a lost node
            raise FleetError(one_line(f"Ray run failed: {_root_cause(exc)}")) from None
        with contextlib.suppress(Exception):
            state.frames = max(finished_frames, ray.get(counter.get.remote(), timeout=5))
    finally:
        stop.set()
        if reporter is not None:
            reporter.join()
        state.seconds = time.perf_counter() - start
        if progress:
            progress(state)
        if started_here:
            ray.shutdown()
        # Ray's driver swaps builtins.print for its progress-bar-safe one once workers log: the
        # process that embeds the fleet (a service, a notebook) gets its own print back.
        builtins.print = host_print


def _quiet_ray_data(ray: Any) -> None:
    """No Ray Data progress bars or start-up banners (the run reports its own progress)."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        context.print_on_execution_start = False


def _shard_dataset(ray: Any, job: _RayJob, todo: list[Shard], counter: Any) -> Any:
    """One row per shard, mapped by a pool of ``job.workers`` :class:`ShardWorker` actors."""
    dataset = ray.data.from_items([{"shard": s.to_json()} for s in todo], override_num_blocks=len(todo))
    return dataset.map_batches(
        ShardWorker,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=job.workers),
        num_cpus=job.cpus_per_worker,
        num_gpus=job.gpus_per_worker or None,
        fn_constructor_kwargs={
            "artifact": str(job.artifact),
            "out": str(job.out),
            "segmenter_options": job.options,
            "overlays": job.overlays,
            "alpha": job.alpha,
            "batch": job.batch,
            "counter": counter,
        },
    )


def _record_outcome(
    out: Path, todo: list[Shard], manifest: dict[str, Any], state: FleetProgress, row: Any
) -> int:
    """Record one shard's outcome in the manifest (written at once) and ``state``; returns the
    frames it finished (0 when it failed)."""
    outcome = json.loads(str(row["outcome"]))
    shard = next(s for s in todo if s.key == outcome["key"])
    manifest["shards"][shard.key] = {
        "status": outcome["status"],
        "output": shard.output if outcome["status"] == "done" else None,
        "frames": outcome["frames"],
        "skipped": outcome["skipped"],
        "error": outcome["error"],
        "seconds": round(outcome["seconds"], 3),
    }
    _write_manifest(out, manifest)
    if outcome["status"] == "done":
        state.shards_done += 1
        return outcome["frames"]
    state.shards_failed += 1
    return 0


def _root_cause(exc: BaseException) -> str:
    """The innermost error's message (Ray wraps worker exceptions several times)."""
    seen = exc
    while getattr(seen, "cause", None) is not None or seen.__cause__ is not None:
        seen = getattr(seen, "cause", None) or seen.__cause__  # type: ignore[assignment]
    text = str(seen).strip().splitlines()
    return text[-1] if text else type(seen).__name__


def _write_index(out: Path, shards: list[Shard], recorded: dict[str, Any]) -> tuple[Any, int, int]:
    """``OUT/index.parquet`` from every finished shard's rows, in plan order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [
        pq.read_table(out / s.output / FRAMES, schema=_index_schema())
        for s in shards
        if recorded[s.key]["status"] == "done"
    ]
    table = pa.concat_tables(tables) if tables else _index_schema().empty_table()
    atomic_write_bytes(out / INDEX, _parquet_bytes(table))
    skipped = table.num_rows - table.column("error").null_count
    return table, table.num_rows - skipped, skipped


def _keep_uncertain(out: Path, shards: list[Shard], index: Any, fraction: float) -> int:
    """Write the input frames of the lowest-``fraction`` margins to ``OUT/uncertain/`` (replacing
    the folder an earlier run wrote there), with ``index.parquet`` of those frames' rows."""
    import pyarrow as pa

    margins = index.column("margin").to_pylist()
    candidates = [i for i, m in enumerate(margins) if m is not None and not math.isnan(m)]
    if not candidates:  # no finished frame (the head was checked before the run)
        return 0
    keep = sorted(candidates, key=lambda i: (margins[i], i))[: max(1, math.ceil(fraction * len(candidates)))]
    keep.sort()
    chosen = index.take(pa.array(keep))
    by_shard: dict[str, dict[int, str]] = {}
    for key, frame_index, frame in zip(*(chosen.column(c).to_pylist() for c in ("shard", "index", "frame"))):
        by_shard.setdefault(key, {})[frame_index] = frame
    dest = out / UNCERTAIN
    if os.path.lexists(dest):  # the previous selection goes whole: move it aside, then remove it
        if not _finished_on_disk(out, Shard(UNCERTAIN, "", "", UNCERTAIN)):
            raise FleetError(f"{dest}: exists and was not written by pem-deploy; move it away")
        discard_folder(dest)
    sources = [s.source for s in shards if s.key in by_shard]
    with staged_folder(dest, inputs=sources) as folder:
        paths: dict[tuple[str, int], str] = {}
        for shard in shards:
            wanted = by_shard.get(shard.key)
            if not wanted:
                continue
            for frame_index, image in _frames_at(shard, set(wanted)):
                rel = f"{shard.output}/{wanted[frame_index].lstrip('/')}.png"
                write_image(folder.path(rel), image)
                paths[(shard.key, frame_index)] = f"{UNCERTAIN}/{rel}"
        image_paths = [
            paths.get((k, i))
            for k, i in zip(chosen.column("shard").to_pylist(), chosen.column("index").to_pylist())
        ]
        folder.write(INDEX, _parquet_bytes(chosen.append_column("image", pa.array(image_paths, pa.string()))))
        folder.write(SHARD_MARKER, json.dumps({"tool": _TOOL, "shard": UNCERTAIN}))
    return len(keep)


def _frames_at(shard: Shard, wanted: set[int]) -> Iterator[tuple[int, np.ndarray]]:
    """The shard's frames at positions ``wanted`` (its index order), read again from the input."""
    source = Path(shard.source)
    if shard.kind == "images":
        for i, name in enumerate(shard.names):
            if i in wanted:
                yield i, load_image(source / name).image
        return
    frames: Iterable[np.ndarray]
    if shard.kind == "bag":
        reader = BagReader(source, shard.topics)
        frames = (f.image for f in reader)
    else:
        reader = None
        frames = read_video(source)
    try:
        for i, image in enumerate(frames):
            if i in wanted:
                yield i, image
            if i >= max(wanted):
                break
    finally:
        if reader is not None:
            reader.close()
