"""Segment an image, a folder or a video and write label PNGs, overlays and JSON (``pem-deploy infer``).

Output folder semantics (``--out DIR``), chosen so that nothing the tool did not write is ever
deleted or replaced (the ``mkdir`` / ``git clone`` convention, plus an opt-in to add to a folder):

- ``DIR`` must be missing or empty; it is created (with its parents). A non-empty ``DIR`` is
  refused unless ``exist_ok`` (``--exist-ok``), which only *adds* ``labels/``, ``panoptic/``,
  ``overlay/`` files and ``predictions.json``. A file already at one of those paths is replaced
  only if ``DIR/predictions.json`` (our manifest) lists it as ours; anything else there is
  refused with its name. ``predictions.json`` is merged: entries of earlier runs are kept unless
  this run wrote the same name again.
- Output names keep the input's path relative to ``INPUT`` and its suffix, so ``x.png``,
  ``x.jpg``, ``a/x.png`` and ``b/x.png`` never collide: ``labels/x.png.png``,
  ``labels/x.jpg.png``, ``labels/a/x.png.png``, ``overlay/a/x.png.jpg``; video frames are
  ``labels/<video name>/<frame:06d>.png``.
- ``DIR`` may not be the input folder, lie inside it (outputs would become inputs), or contain
  the input inside its own ``labels/``/``panoptic/``/``overlay/``. A ``DIR`` that contains the
  input or the artifact elsewhere is fine with ``exist_ok``; they are never touched.
- One run at a time per ``DIR``: a run holds an ``flock`` on ``DIR/.pem-deploy.lock`` (released
  by the kernel if the process dies) and a second run fails at once with one line.
- Everything is written into ``DIR/.pem-deploy-staging-<pid>-<random>/`` (with a marker file
  naming it ours), then moved into place one file at a time with atomic renames,
  ``predictions.json`` last; a failure before the moves leaves ``DIR`` as it was. Staging
  folders left by a killed run are removed by the next run into ``DIR`` when provably ours: our
  prefix and our marker, or our prefix and empty (killed before the marker was written); files
  a killed run had already moved in are listed in its marker and count as ours.
- A folder run skips files that cannot be read (one ``skipped`` line each through
  ``on_skip``), finishes the others and reports them in :class:`InferSummary` and
  ``predictions.json``; ``strict`` stops at the first one instead (and writes nothing).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import InputError
from runtime.images import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    atomic_write_bytes,
    list_images,
    load_image,
    write_image,
)
from runtime.postprocess import (
    colorize_labels,
    colorize_panoptic,
    label_png_array,
    outline_things,
    overlay,
)
from runtime.segmenter import Result, Segmenter, read_video
from runtime.sources import VideoWriter, video_frame_count

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

OUTPUT_FOLDERS = ("labels", "panoptic", "overlay", "video")
PREDICTIONS = "predictions.json"
LOCK_NAME = ".pem-deploy.lock"
STAGING_PREFIX = ".pem-deploy-staging-"
STAGING_MARKER = ".pem-deploy-staging.json"
_MARKER_TOOL = "pem-deploy infer staging folder"
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


class _Lock:
    """An exclusive ``flock`` on ``DIR/.pem-deploy.lock``; the file is removed on release."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        self.fd: int | None = None
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is None:
                self.fd = fd
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise InputError(
                        f"{folder}: another pem-deploy infer is writing into this folder right now "
                        f"(it holds {self.path.name}); wait for it or choose another --out"
                    ) from None
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:  # not unlinked by a finishing run between our open and our flock
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return
            os.close(fd)
        raise InputError(f"{self.path}: could not lock (it keeps being replaced)")

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def _read_marker(folder: Path) -> dict[str, object] | None:
    try:
        marker = json.loads((folder / STAGING_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("tool") == _MARKER_TOOL else None


def _clean_stale_staging(out_dir: Path) -> set[str]:
    """Remove staging folders of dead runs (ours: prefix and marker); return the files they moved."""
    moved: set[str] = set()
    for entry in out_dir.iterdir():
        if not entry.name.startswith(STAGING_PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        marker = _read_marker(entry)
        if marker is None:
            # Killed between mkdir and the marker's single write: empty, or an empty marker only.
            leftovers = list(entry.iterdir())
            if leftovers and (
                [p.name for p in leftovers] != [STAGING_MARKER] or leftovers[0].stat().st_size != 0
            ):
                continue  # not provably ours: leave it
            for p in leftovers:
                p.unlink()
            entry.rmdir()
            continue
        moving = marker.get("moving", [])
        if isinstance(moving, list):
            moved.update(m for m in moving if isinstance(m, str))
        shutil.rmtree(entry)
    return moved


def _read_predictions(out_dir: Path) -> dict[str, object] | None:
    """The existing ``predictions.json`` if it is ours; None if absent; refuses a foreign one."""
    path = out_dir / PREDICTIONS
    if not path.exists() and not path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    if not (isinstance(data, dict) and isinstance(data.get("predictions"), list) and "artifact" in data):
        raise InputError(f"{path}: exists and is not a pem-deploy predictions file; refusing to replace it")
    return data


def _owned(previous: dict[str, object] | None) -> set[str]:
    owned: set[str] = set()
    for video in (previous or {}).get("videos", []):  # type: ignore[union-attr]
        if isinstance(video, dict) and isinstance(video.get("output"), str):
            owned.add(video["output"])
    for record in (previous or {}).get("predictions", []):  # type: ignore[union-attr]
        outputs = record.get("outputs") if isinstance(record, dict) else None
        if isinstance(outputs, dict):
            owned.update(v for v in outputs.values() if isinstance(v, str))
    return owned


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
    save_video: bool = False,
) -> InferSummary:
    """Segment ``source`` (image, folder or video) into ``out_dir`` (see the module docstring).

    Writes ``labels/<name>.png`` (class ids, uint8 when they fit, else 16-bit), for panoptic
    artifacts ``panoptic/<name>.png`` (segment ids, 16-bit), ``overlay/<name>.jpg`` and
    ``predictions.json``, where ``<name>`` is the input's relative path with its suffix.
    ``on_skip`` gets one line per unreadable file of a folder (``strict``: raise instead),
    ``on_note`` one line per converted image (grayscale, alpha, 16-bit, EXIF orientation).
    ``frames`` (``(name, BGR image)`` pairs, ``total`` of them if known: a bag, a camera)
    replaces reading ``source``, which then only names the input.
    ``save_video`` (a video input): also ``video/<name>``, the overlays as a video with the
    input's codec and frame rate where OpenCV can write them (:class:`runtime.sources.VideoWriter`
    says what it fell back to, listed under ``videos`` in ``predictions.json``).
    """
    source, out_dir = Path(source), Path(out_dir)
    kind = "stream" if frames is not None else _source_kind(source)
    if save_video and kind != "video":
        raise InputError(f"{source}: --save-video is for a video file input (this is a {kind})")
    listing_errors: list[tuple[str, str]] = []
    paths = list_images(source, None if strict else listing_errors) if kind == "folder" else [source]
    check_out_dir(out_dir, source)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = _Lock(out_dir)
    staging: Path | None = None
    try:
        stale_moves = _clean_stale_staging(out_dir)
        present = sorted(e.name for e in out_dir.iterdir() if e.name != LOCK_NAME)
        if present and not exist_ok:
            shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
            raise InputError(
                f"{out_dir}: output folder is not empty ({len(present)} entries: {shown}); pass "
                "--exist-ok (exist_ok=True) to add labels/, panoptic/, overlay/ and predictions.json "
                "to it, or choose a new folder"
            )
        previous = _read_predictions(out_dir)
        staging = out_dir / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        # One small write(): a kill leaves no marker, an empty one or a whole one (see the cleaner).
        fd = os.open(staging / STAGING_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, json.dumps({"tool": _MARKER_TOOL, "pid": os.getpid(), "moving": []}).encode())
        finally:
            os.close(fd)
        summary, records = _segment_all(
            segmenter,
            source,
            kind,
            paths,
            staging,
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
        _install(
            out_dir, staging, records, previous, _owned(previous) | stale_moves, segmenter, source, summary
        )
        videos = tuple({**v, "output": str(out_dir / str(v["output"]))} for v in summary.videos)
        return InferSummary(
            out_dir, summary.frames, summary.mean_timings_ms, summary.failed, summary.notes, videos
        )
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only succeeds if this failed run left it empty


def _segment_all(
    segmenter: Segmenter,
    source: Path,
    kind: str,
    paths: list[Path],
    staging: Path,
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
    video = VideoWriter(staging / "video" / source.name, source) if save_video else None
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
        files = _outputs(frame.name, result.panoptic is not None, overlays)
        labels = result.labels
        write_image(staging / files["labels"], label_png_array(labels, files["labels"]))
        if result.panoptic is not None:
            write_image(
                staging / files["panoptic"],
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
                write_image(staging / files["overlay"], blended)
            if video is not None:
                video.write(blended)
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
    videos: tuple[dict[str, object], ...] = ()
    if video is not None:
        video.close()
        if video.out is not None:
            out = video.out
            videos = (
                {
                    "name": source.name,
                    "output": out.path.relative_to(staging).as_posix(),
                    "codec": out.codec,
                    "fps": out.fps,
                    "frames": out.frames,
                    "fallback": out.fallback,
                },
            )
    return InferSummary(staging, count, means, tuple(failed), tuple(notes), videos), records


def _install(
    out_dir: Path,
    staging: Path,
    records: list[dict[str, object]],
    previous: dict[str, object] | None,
    owned: set[str],
    segmenter: Segmenter,
    source: Path,
    summary: InferSummary,
) -> None:
    """Check for foreign files, write the merged manifest into staging, then move everything in."""
    moving = [rel for r in records for rel in r["outputs"].values()]  # type: ignore[union-attr]
    moving += [str(v["output"]) for v in summary.videos]
    for rel in moving:
        dest = out_dir / rel
        if (dest.exists() or dest.is_symlink()) and (rel not in owned or dest.is_dir()):
            raise InputError(
                f"{dest}: exists and was not written by pem-deploy (not in {PREDICTIONS}); refusing to "
                "replace it: move it away or choose another --out"
            )
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
    atomic_write_bytes(staging / PREDICTIONS, (json.dumps(meta, indent=2) + "\n").encode())
    marker = {"tool": _MARKER_TOOL, "pid": os.getpid(), "moving": moving}
    atomic_write_bytes(staging / STAGING_MARKER, json.dumps(marker).encode())
    for rel in moving:
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, dest)
    os.replace(staging / PREDICTIONS, out_dir / PREDICTIONS)
