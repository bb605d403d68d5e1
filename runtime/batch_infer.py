"""Segment an image, a folder or a video and write label PNGs, overlays and JSON (``pem-deploy infer``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import InputError
from runtime.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_images, read_image, write_image
from runtime.postprocess import colorize_labels, colorize_panoptic, label_png_array, overlay
from runtime.segmenter import Result, Segmenter, read_video


@dataclass(frozen=True)
class InferSummary:
    """What :func:`infer_path` wrote."""

    out_dir: Path
    frames: int
    mean_timings_ms: dict[str, float]


def _frames(source: Path) -> tuple[Iterator[tuple[str, np.ndarray]], int | None]:
    if source.is_dir():
        files = list_images(source)
        return ((str(p.relative_to(source).with_suffix("")), read_image(p)) for p in files), len(files)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    suffix = source.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return iter([(source.stem, read_image(source))]), 1
    if suffix in VIDEO_SUFFIXES:
        return ((f"{source.stem}_{i:06d}", frame) for i, frame in enumerate(read_video(source))), None
    raise InputError(
        f"{source}: not an image ({', '.join(IMAGE_SUFFIXES)}) or video ({', '.join(VIDEO_SUFFIXES)})"
    )


def _record(name: str, result: Result, artifact_classes: list[str]) -> dict[str, object]:
    record: dict[str, object] = {
        "name": name,
        "timings_ms": {k: round(v, 3) for k, v in result.timings.items()},
    }
    if result.panoptic is not None:
        record["segments"] = [
            {
                "id": s.id,
                "category_id": s.category_id,
                "category": artifact_classes[s.category_id],
                "isthing": s.isthing,
                "score": round(s.score, 4),
                "area": s.area,
            }
            for s in result.segments
        ]
    else:
        ids, counts = np.unique(result.labels, return_counts=True)
        record["class_pixels"] = {
            artifact_classes[int(i)]: int(c) for i, c in zip(ids, counts) if i < len(artifact_classes)
        }
    return record


def infer_path(
    segmenter: Segmenter,
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    overlays: bool = True,
    alpha: float = 0.5,
    progress: Callable[[int, int | None], None] | None = None,
) -> InferSummary:
    """Segment ``source`` (image, folder or video) into ``out_dir``.

    Writes ``labels/<name>.png`` (class ids, uint8 when they fit, else 16-bit), for panoptic
    artifacts ``panoptic/<name>.png`` (segment ids, 16-bit), ``overlay/<name>.jpg`` and
    ``predictions.json``. Everything is written into a temporary folder first and moved into
    place at the end, so a failure leaves ``out_dir`` as it was.
    """
    source, out_dir = Path(source), Path(out_dir)
    frames, total = _frames(source)
    classes = [c.name for c in segmenter.artifact.classes]
    palette = segmenter.artifact.palette
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        records, sums, count = [], {"pre": 0.0, "infer": 0.0, "post": 0.0}, 0
        for name, image in frames:
            result = segmenter.predict(image, name)
            for sub in ("labels", "overlay") + (("panoptic",) if result.panoptic is not None else ()):
                (staging / sub / name).parent.mkdir(parents=True, exist_ok=True)
            labels = result.labels
            write_image(staging / "labels" / f"{name}.png", label_png_array(labels, name))
            if result.panoptic is not None:
                write_image(
                    staging / "panoptic" / f"{name}.png",
                    label_png_array(result.panoptic, name, "panoptic", 16),
                )
            if overlays:
                colors = (
                    colorize_panoptic(result.panoptic, result.segments, palette)
                    if result.panoptic is not None
                    else colorize_labels(labels, palette)
                )
                write_image(staging / "overlay" / f"{name}.jpg", overlay(image, colors, alpha))
            records.append(_record(name, result, classes))
            for key in sums:
                sums[key] += result.timings.get(key, 0.0)
            count += 1
            if progress:
                progress(count, total)
        if count == 0:
            raise InputError(f"{source}: nothing to segment")
        means = {k: v / count for k, v in sums.items()}
        meta = {
            "artifact": str(segmenter.artifact.model_path),
            "head": segmenter.artifact.head,
            "source": str(source),
            "frames": count,
            "mean_timings_ms": {k: round(v, 3) for k, v in means.items()},
            "predictions": records,
        }
        (staging / "predictions.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            out_dir.rename(backup)
            staging.rename(out_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(out_dir)
        return InferSummary(out_dir, count, means)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def stderr_progress(done: int, total: int | None) -> None:
    """Minimal progress line on a TTY; silent otherwise."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{done}/{total if total is not None else '?'} frames")
        sys.stderr.flush()
