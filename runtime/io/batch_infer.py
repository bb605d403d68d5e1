"""Segment an image, a folder or a video and write label PNGs, overlays and JSON (``pem-deploy infer``).

Output folder semantics (``--out DIR``): the rules of :mod:`contract.output`, which owns all
writing (nothing the tool did not write is ever deleted or replaced):

- ``DIR`` is created (with its parents) if missing. A ``DIR`` holding files pem-deploy did not
  write is refused unless ``exist_ok`` (``--exist-ok``), which only *adds* ``labels/``,
  ``panoptic/``, ``overlay/`` files and ``predictions.json``; a foreign file at one of those
  names is still refused unless ``overwrite`` (``--overwrite``). Our own files of an earlier run
  are replaced; ``predictions.json`` is merged: entries of earlier runs are kept unless this run
  wrote the same name again.
- Output names keep the input's path relative to ``INPUT`` and its suffix, so ``x.png``,
  ``x.jpg``, ``a/x.png`` and ``b/x.png`` never collide: ``labels/x.png.png``,
  ``labels/x.jpg.png``, ``labels/a/x.png.png``, ``overlay/a/x.png.jpg``; video frames are
  ``labels/<video name>/<frame:06d>.png``.
- ``DIR`` may not be the input folder, lie inside it (outputs would become inputs), or contain
  the input inside its own ``labels/``/``panoptic/``/``overlay/``; no output is ever written onto
  an input (the images, the video or bag, the artifact and its sidecar), whatever the flags.
- One run at a time per ``DIR``; everything is staged and renamed into place when complete
  (``predictions.json`` last), so a failure or a kill leaves ``DIR`` as it was.
- A folder run skips files that cannot be read (one ``skipped`` line each through
  ``on_skip``), finishes the others and reports them in :class:`InferSummary` and
  ``predictions.json``; ``strict`` stops at the first one instead (and writes nothing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.output import FolderOutput, guard_inputs, staged_folder
from runtime.core.postprocess import (
    colorize_labels,
    colorize_panoptic,
    label_png_array,
    outline_things,
    overlay,
)
from runtime.core.segmenter import Result, Segmenter, read_video
from runtime.errors import InputError
from runtime.io.images import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    list_images,
    load_image,
    write_image,
)
from runtime.io.sources import VideoWriter, video_frame_count

OUTPUT_FOLDERS = ("labels", "panoptic", "overlay", "video")
PREDICTIONS = "predictions.json"
_PREDICTIONS_FORMAT = "pem-deploy-predictions"


@dataclass(frozen=True)
class InferSummary:
    """What :func:`infer_path` wrote: frames segmented, the ones skipped and conversion notes."""

    out_dir: Path
    frames: int
    mean_timings_ms: dict[str, float]
    failed: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    videos: tuple[dict[str, object], ...] = ()  # --save-video: output, codec, fps, frames, fallback


@dataclass
class _Frame:
    name: str  # relative input name, e.g. "a/x.png" or "clip.mp4/000003"
    image: np.ndarray | None
    notes: list[str]
    error: str | None = None


def _frames(
    source: Path, kind: str, names: list[Path], strict: bool, given: Iterable[tuple[str, np.ndarray]] | None
) -> Iterator[_Frame]:
    if given is not None:
        for name, image in given:
            yield _Frame(name, image, [])
        return
    if kind == "video":
        for i, frame in enumerate(read_video(source)):
            yield _Frame(f"{source.name}/{i:06d}", frame, [])
        return
    for path in names:
        name = path.relative_to(source).as_posix() if kind == "folder" else path.name
        try:
            loaded = load_image(path)
        except InputError as exc:
            if strict or kind == "image":
                raise
            yield _Frame(name, None, [], str(exc))
            continue
        yield _Frame(name, loaded.image, loaded.notes)


def _source_kind(source: Path) -> str:
    if source.is_dir():
        return "folder"
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    suffix = source.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise InputError(
        f"{source}: not an image ({', '.join(IMAGE_SUFFIXES)}) or video ({', '.join(VIDEO_SUFFIXES)})"
    )


def _outputs(name: str, panoptic: bool, overlays: bool) -> dict[str, str]:
    files = {"labels": f"labels/{name}.png"}
    if panoptic:
        files["panoptic"] = f"panoptic/{name}.png"
    if overlays:
        files["overlay"] = f"overlay/{name}.jpg"
    return files


def _record(
    name: str, result: Result, artifact_classes: list[str], files: dict[str, str]
) -> dict[str, object]:
    record: dict[str, object] = {
        "name": name,
        "outputs": files,
        "timings_ms": {k: round(v, 3) for k, v in result.timings.items()},
    }
    if result.notes:
        record["notes"] = result.notes
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


def check_out_dir(out_dir: Path, source: Path) -> None:
    """Refuse output folders that are files or would mix inputs and outputs (one line each)."""
    if out_dir.is_symlink() and not out_dir.exists():
        raise InputError(f"{out_dir}: --out is a broken symbolic link")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: --out exists and is not a folder")
    out_r, src_r = out_dir.resolve(), source.resolve()
    if source.is_dir():
        if out_r == src_r:
            raise InputError(f"{out_dir}: --out is the input folder itself; choose another folder")
        if src_r in out_r.parents:
            raise InputError(
                f"{out_dir}: --out is inside the input folder {source}; its outputs would be read as "
                "inputs next time; choose a folder outside it"
            )
    for sub in OUTPUT_FOLDERS:
        ours = out_r / sub
        if src_r == ours or ours in src_r.parents:
            raise InputError(
                f"{source}: the input is inside {out_dir / sub}, where this run writes its outputs; "
                "choose another --out"
            )


def _read_predictions(path: Path | None) -> dict[str, object] | None:
    """An earlier run's ``predictions.json`` (this tool's, else None), merged into the new one."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("predictions"), list) else None


def infer_path(
    segmenter: Segmenter,
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    overlays: bool = True,
    alpha: float = 0.5,
    progress: Callable[[int, int | None], None] | None = None,
    exist_ok: bool = False,
    strict: bool = False,
    on_skip: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    frames: Iterable[tuple[str, np.ndarray]] | None = None,
    total: int | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
    save_video: bool = False,
) -> InferSummary:
    """Segment ``source`` (image, folder or video) into ``out_dir`` (see the module docstring).

    Writes ``labels/<name>.png`` (class ids, uint8 when they fit, else 16-bit), for panoptic
    artifacts ``panoptic/<name>.png`` (segment ids, 16-bit), ``overlay/<name>.jpg`` and
    ``predictions.json``, where ``<name>`` is the input's relative path with its suffix.
    ``on_skip`` gets one line per unreadable file of a folder (``strict``: raise instead),
    ``on_note`` one line per converted image (grayscale, alpha, 16-bit, EXIF orientation).
    ``frames`` (``(name, BGR image)`` pairs, ``total`` of them if known: a bag, a camera)
    replaces reading ``source``, which then only names the input. ``exist_ok`` /
    ``overwrite``: see the module docstring; ``inputs``: more files this run reads, never written.
    ``save_video`` (a video input): also ``video/<name>``, the overlays as a video with the
    input's codec and frame rate where OpenCV can write them (:class:`runtime.io.sources.VideoWriter`
    says what it fell back to, listed under ``videos`` in ``predictions.json``).
    """
    source, out_dir = Path(source), Path(out_dir)
    kind = "stream" if frames is not None else _source_kind(source)
    listing_errors: list[tuple[str, str]] = []
    paths = list_images(source, None if strict else listing_errors) if kind == "folder" else [source]
    if save_video and kind != "video":
        raise InputError(f"{source}: --save-video is for a video file input (this is a {kind})")
    artifact = segmenter.artifact
    read = [source, artifact.model_path, artifact.sidecar_path, *inputs]
    guard_inputs([out_dir], read)  # first: "that is your input" says more than "not a folder"
    check_out_dir(out_dir, source)
    with staged_folder(
        out_dir, exist_ok=exist_ok, overwrite=overwrite, inputs=read, names=[PREDICTIONS]
    ) as out:
        summary, records = _segment_all(
            segmenter,
            source,
            kind,
            paths,
            out,
            overlays,
            alpha,
            progress,
            strict,
            on_skip,
            on_note,
            listing_errors,
            frames,
            total,
            save_video,
        )
        out.merge(PREDICTIONS, lambda previous: _predictions(previous, records, segmenter, source, summary))
    videos = tuple({**v, "output": str(out_dir / str(v["output"]))} for v in summary.videos)
    return InferSummary(
        out_dir, summary.frames, summary.mean_timings_ms, summary.failed, summary.notes, videos
    )


def _segment_all(
    segmenter: Segmenter,
    source: Path,
    kind: str,
    paths: list[Path],
    out: FolderOutput,
    overlays: bool,
    alpha: float,
    progress: Callable[[int, int | None], None] | None,
    strict: bool,
    on_skip: Callable[[str], None] | None,
    on_note: Callable[[str], None] | None,
    listing_errors: list[tuple[str, str]],
    given: Iterable[tuple[str, np.ndarray]] | None,
    total: int | None,
    save_video: bool = False,
) -> tuple[InferSummary, list[dict[str, object]]]:
    classes = [c.name for c in segmenter.artifact.classes]
    palette = segmenter.artifact.palette
    if kind in ("folder", "image"):
        total = len(paths)
    if kind == "video":
        total = video_frame_count(source)
    # Written in scratch (never installed as is), adopted under its final name once closed: the
    # writer may fall back to another container (name + .mp4).
    video = VideoWriter(out.scratch / "video" / source.name, source) if save_video else None
    records: list[dict[str, object]] = []
    failed: list[tuple[str, str]] = list(listing_errors)
    notes: list[str] = []
    for _, message in listing_errors:
        if on_skip:
            on_skip(message)
    sums, count = {"pre": 0.0, "infer": 0.0, "post": 0.0}, 0
    for frame in _frames(source, kind, paths, strict, given):
        if frame.image is not None:
            try:
                result = segmenter.predict(frame.image, frame.name)
            except InputError as exc:
                if strict or kind != "folder":
                    raise
                frame.error = str(exc)
        if frame.error is not None:
            failed.append((frame.name, frame.error))
            if on_skip:
                on_skip(frame.error)
            continue
        result.notes = frame.notes + result.notes
        for note in result.notes:
            notes.append(note)
            if on_note:
                on_note(note)
        files = _write_outputs(out, frame, result, (overlays, alpha, palette), video)
        records.append(_record(frame.name, result, classes, files))
        for key in sums:
            sums[key] += result.timings.get(key, 0.0)
        count += 1
        if progress:
            progress(count + len(failed), total)
    if count == 0:
        if failed:
            raise InputError(
                f"{source}: none of the {len(failed)} file(s) could be read (first: {failed[0][1]})"
            )
        raise InputError(f"{source}: nothing to segment")
    means = {k: v / count for k, v in sums.items()}
    videos = _install_video(video, out, source) if video is not None else ()
    return InferSummary(out.target, count, means, tuple(failed), tuple(notes), videos), records


def _write_outputs(
    out: FolderOutput,
    frame: _Frame,
    result: Result,
    drawing: tuple[bool, float, np.ndarray],
    video: VideoWriter | None,
) -> dict[str, str]:
    """Write one frame's label (and panoptic) PNGs and, with ``drawing``'s overlays flag, its
    overlay (alpha, palette); feed the overlay to ``video``. Returns the files by kind."""
    overlays, alpha, palette = drawing
    files = _outputs(frame.name, result.panoptic is not None, overlays)
    labels = result.labels
    write_image(out.path(files["labels"]), label_png_array(labels, files["labels"]))
    if result.panoptic is not None:
        write_image(
            out.path(files["panoptic"]),
            label_png_array(result.panoptic, files["panoptic"], "panoptic", 16),
        )
    if overlays or video is not None:
        colors = (
            colorize_panoptic(result.panoptic, result.segments, palette)
            if result.panoptic is not None
            else colorize_labels(labels, palette)
        )
        blended = overlay(frame.image, colors, alpha)
        if result.panoptic is not None:  # instances of one class stay apart
            blended = outline_things(blended, result.panoptic, result.segments)
        if overlays:
            write_image(out.path(files["overlay"]), blended)
        if video is not None:
            video.write(blended)
    return files


def _install_video(video: VideoWriter, out: FolderOutput, source: Path) -> tuple[dict[str, object], ...]:
    """Close the overlay video and adopt it under ``video/``; its record (none if not written)."""
    video.close()
    if video.out is None:
        return ()
    written = video.out
    rel = f"video/{written.path.name}"
    out.adopt(rel, written.path)
    return (
        {
            "name": source.name,
            "output": rel,
            "codec": written.codec,
            "fps": written.fps,
            "frames": written.frames,
            "fallback": written.fallback,
        },
    )


def _predictions(
    previous_path: Path | None,
    records: list[dict[str, object]],
    segmenter: Segmenter,
    source: Path,
    summary: InferSummary,
) -> str:
    """``predictions.json``: this run's records plus an earlier run's other names (computed at
    commit under the folder's lock, so two runs into one folder both keep their records)."""
    previous = _read_predictions(previous_path)
    names = {r["name"] for r in records}
    kept = [
        r
        for r in (previous or {}).get("predictions", [])  # type: ignore[union-attr]
        if isinstance(r, dict) and r.get("name") not in names
    ]
    meta = {
        "format": _PREDICTIONS_FORMAT,
        "version": 1,
        "artifact": str(segmenter.artifact.model_path),
        "head": segmenter.artifact.head,
        "source": str(source),
        "frames": summary.frames,
        "mean_timings_ms": {k: round(v, 3) for k, v in summary.mean_timings_ms.items()},
        "failed": [{"name": n, "error": e} for n, e in summary.failed],
        "predictions": kept + records,
    }
    new_videos = {str(v["output"]) for v in summary.videos}
    earlier = [
        v
        for v in (previous or {}).get("videos", [])  # type: ignore[union-attr]
        if isinstance(v, dict) and v.get("output") not in new_videos
    ]
    if earlier or summary.videos:
        meta["videos"] = earlier + list(summary.videos)
    return json.dumps(meta, indent=2) + "\n"
