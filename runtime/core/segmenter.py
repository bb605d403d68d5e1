"""``Segmenter``: the one object a robotics pipeline holds: artifact -> backend -> results."""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from runtime.core.artifact import Artifact, load_artifact, with_input_size
from runtime.core.backends.base import Backend
from runtime.core.image_input import max_pixels_limit, prepare_image
from runtime.core.postprocess import (
    Segment,
    category_map,
    check_class_ids,
    check_finite_outputs,
    fuse_panoptic_outputs,
    segments_at_size,
    semantic_scores_from_raw,
    to_original_size,
)
from runtime.core.preprocess import Geometry, Preprocessor, ResizeMode
from runtime.errors import ArtifactError, InputError

PANOPTIC_OUTPUTS = ("scores", "classes", "owner", "owner_fg", "mask_area")
# The float outputs each head's post-processing reads (checked for NaN / Inf).
_FLOAT_OUTPUTS: dict[str, tuple[str, ...]] = {"panoptic": ("scores",), "raw": ("pred_logits", "pred_masks")}
VOID = 255


@dataclass
class Result:
    """Prediction for one image, at the image's original size.

    ``labels``: (H, W) int32 class ids (semantic; for panoptic artifacts the segments' classes,
    ``255`` where void). ``panoptic``: (H, W) int32 segment ids (0 = void) and ``segments``
    (panoptic artifacts only). ``timings``: milliseconds per stage (``pre``, ``infer``, ``post``;
    in a batch, ``infer`` is the whole batch's time divided by its size), and ``infer`` split into
    ``h2d``, ``compute``, ``d2h`` as the backend can (``Backend.infer_timed``). ``notes``: one line
    per conversion applied to the input (grayscale replicated, alpha dropped, 16-bit scaled).
    ``margin``: mean over the pixels of (best - second best class score), where the model gives
    class scores (``raw`` heads); ``None`` for heads that output labels only. Low = unsure.
    """

    labels: np.ndarray
    panoptic: np.ndarray | None = None
    segments: list[Segment] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    margin: float | None = None


BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino", "tensorrt")


# onnxruntime providers on which ``cuda_graph`` does something.
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider")


def open_backend(
    artifact: Artifact,
    providers: list[str] | None = None,
    threads: int = 0,
    cuda_graph: bool = False,
    contexts: int | None = None,
    backend: str | None = None,
) -> Backend:
    """The backend an artifact asks for, or ``backend`` (``onnxruntime`` / ``openvino`` for an
    ONNX artifact; ``tensorrt`` for an engine).

    ``contexts``: TensorRT execution contexts (default: what the engine was built for, else 1).
    """
    chosen = backend or artifact.backend
    if chosen not in BACKENDS:
        raise ArtifactError(f"--backend {chosen}: choose one of {', '.join(BACKENDS)}")
    wants_engine = chosen == "tensorrt"
    if wants_engine != (artifact.backend == "tensorrt"):
        kind = "a TensorRT engine" if artifact.backend == "tensorrt" else "an ONNX model"
        raise ArtifactError(f"{artifact.model_path}: is {kind}; --backend {chosen} cannot run it")
    if chosen == "openvino":
        from runtime.core.backends.openvino_backend import NATIVE_DEFORM_CONV, OpenVINOBackend

        graph = artifact.spec.provenance.graph
        if graph.op_counts.get("DeformConv") or graph.deform_impl == "native":
            raise ArtifactError(NATIVE_DEFORM_CONV.format(path=artifact.model_path))
        return OpenVINOBackend(artifact.model_path, threads=threads)
    if artifact.backend == "tensorrt":
        from runtime.core.backends.tensorrt_backend import TensorRTBackend

        engine = artifact.spec.provenance.engine
        built = (engine.contexts if engine is not None else None) or 1
        return TensorRTBackend(
            artifact.model_path, artifact.spec, cuda_graph=cuda_graph, contexts=contexts or int(built)
        )
    from runtime.core.backends.onnxruntime_backend import GpuOptions, OnnxRuntimeBackend

    gpu = GpuOptions(cuda_graph=cuda_graph)
    return OnnxRuntimeBackend(
        artifact.model_path, providers=providers, threads=threads, precision=artifact.precision, gpu=gpu
    )


class Segmenter:
    """Semantic / panoptic segmentation with an exported PEM model; no torch needed.

    Thread-safe: several threads may call :meth:`predict` on one instance (onnxruntime sessions
    are re-entrant; the TensorRT backend runs a pool of execution contexts).

    Args:
        artifact: the loaded artifact.
        backend: a backend running ``artifact.model_path``.
        resize: how images are fitted to the model size (``stretch`` or ``letterbox``).
        input_color: channel order of images given to :meth:`predict` (``BGR`` from OpenCV).
        max_pixels: images larger than this are refused (default ``$PEM_DEPLOY_MAX_PIXELS`` or
            100 million).

    Images: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) numpy arrays of uint8 or uint16; grayscale
    is replicated, alpha dropped, 16-bit scaled to 8-bit, each noted in ``Result.notes``. Other
    arrays raise :class:`InputError`.
    """

    def __init__(
        self,
        artifact: Artifact,
        backend: Backend,
        resize: ResizeMode = "stretch",
        input_color: str = "BGR",
        max_pixels: int | None = None,
    ):
        self.artifact = artifact
        self.backend = backend
        self.preprocessor = Preprocessor(artifact.input_format, resize, input_color)  # type: ignore[arg-type]
        self.max_pixels = max_pixels_limit(max_pixels)
        self.notes: list[str] = []  # one line per option that does nothing here (e.g. cuda_graph on a CPU)
        # the sidecar must describe the model's real inputs/outputs
        artifact.spec.check_against(backend.io_signature(), artifact.sidecar_path)
        if artifact.spec.consumer is not None:  # pem-deploy package --for ...: the consumer's I/O
            consumer = artifact.spec.consumer
            source = consumer.packaged_from or "see the sidecar"
            raise ArtifactError(
                f"{artifact.model_path}: packaged for {consumer.profile} (its I/O is that consumer's); "
                f"run the exported artifact it was made from ({source})"
            )
        names = {spec.name for spec in backend.outputs}
        needed = {"semantic": ("labels",), "panoptic": PANOPTIC_OUTPUTS, "raw": ("pred_logits", "pred_masks")}
        missing = [n for n in needed[artifact.head] if n not in names]
        if missing:
            raise ArtifactError(
                f"{artifact.model_path}: model lacks output(s) {', '.join(missing)} that its sidecar's "
                f"head {artifact.head!r} promises (model outputs: {', '.join(sorted(names))})"
            )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        providers: list[str] | None = None,
        resize: ResizeMode = "stretch",
        input_color: str = "BGR",
        threads: int = 0,
        cuda_graph: bool = False,
        verify_checksum: bool = True,
        contexts: int | None = None,
        backend: str | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> Segmenter:
        """Open an artifact (model file, sidecar or folder) with the backend it asks for, or with
        ``backend`` (``onnxruntime``, ``openvino`` (decomposed-DeformConv ONNX only), ``tensorrt``).

        ``cuda_graph``: replay the inference as a CUDA graph (TensorRT backend; onnxruntime's
        TensorRT / CUDA providers; on a CPU provider it has no effect, which ``notes`` says).
        ``contexts``: TensorRT execution contexts that run at once. ``input_size``: (height,
        width) the model runs at, for a dynamic export (default: its ``default_size``), checked
        against the sidecar's range (:func:`runtime.core.artifact.with_input_size`).
        """
        artifact = load_artifact(path, verify_checksum=verify_checksum)
        if input_size is not None:
            artifact = with_input_size(artifact, input_size)
        runner = open_backend(artifact, providers, threads, cuda_graph, contexts, backend)
        segmenter = cls(artifact, runner, resize, input_color)
        active = getattr(runner, "providers", None)
        if (
            cuda_graph
            and artifact.backend != "tensorrt"
            and not (active and any(p in GPU_PROVIDERS for p in active))
        ):
            segmenter.notes.append(
                f"cuda_graph has no effect here (providers: {', '.join(active or [type(runner).__name__])}); "
                "CUDA graphs need a TensorRT engine or onnxruntime's CUDA / TensorRT provider"
            )
        return segmenter

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inference ---------------------------------------------------------------------------

    def predict(self, image: np.ndarray, name: str = "image") -> Result:
        """(H, W, 3) uint8 image (or another accepted form) -> :class:`Result` at (H, W)."""
        if not isinstance(name, str):
            raise InputError(f"predict: name must be a string, got {type(name).__name__}")
        return self._run([image], [name])[0]

    def predict_batch(self, images: list[np.ndarray], names: list[str] | None = None) -> list[Result]:
        """Several images (any sizes) -> one result each; batched as the model allows.

        ``images``: a non-empty list or tuple of arrays (or an (N, H, W, C) array); ``names``:
        as many strings, used in error messages and notes. A static-batch model gets its batch
        filled with copies of the last image. Raises :class:`InputError` for anything else.
        """
        if isinstance(images, np.ndarray):
            if images.ndim != 4:
                raise InputError(
                    f"predict_batch: expected a list of images or an (N, H, W, C) array, got shape "
                    f"{images.shape} (for one image use predict)"
                )
            images = list(images)
        if not isinstance(images, (list, tuple)):
            raise InputError(
                f"predict_batch: expected a list or tuple of images, got {type(images).__name__}"
            )
        if not images:
            raise InputError("predict_batch: no images given (an empty list)")
        if names is None:
            names = [f"image[{i}]" for i in range(len(images))]
        elif not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise InputError("predict_batch: names must be a list of strings, one per image")
        elif len(names) != len(images):
            raise InputError(f"predict_batch: {len(images)} images but {len(names)} names")
        chunk = self.artifact.batch or len(images) or 1
        results: list[Result] = []
        for start in range(0, len(images), chunk):
            results.extend(self._run(images[start : start + chunk], names[start : start + chunk]))
        return results

    def stream(
        self, frames: Iterable[np.ndarray], *, pipelined: bool = True, queue_size: int = 2
    ) -> Iterator[Result]:
        """Segment a frame iterator (e.g. :func:`read_video`) lazily, one result per frame, in order.

        ``pipelined`` (default): pre-processing of frame k+1, inference of frame k and
        post-processing of frame k-1 run at once on three threads (numpy, OpenCV, onnxruntime and
        TensorRT release the GIL), linked by queues of ``queue_size`` frames, so a slow consumer
        holds the producer back (back-pressure) and memory stays bounded. The frame iterator is
        read on the pre-processing thread. An exception in any stage (or in the iterator) is
        raised here, on the caller's thread, after the frames before it; closing the generator
        (``close()``, ``break``, garbage collection, Ctrl-C) stops and joins every thread.
        ``pipelined=False``: one frame after the other on the caller's thread.
        """
        if not pipelined:
            return self._sequential(frames)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        return _pipeline(self, frames, queue_size)

    def _sequential(self, frames: Iterable[np.ndarray]) -> Iterator[Result]:
        for index, frame in enumerate(frames):
            yield self.predict(frame, f"frame {index}")

    def check_outputs(self, outputs: dict[str, np.ndarray], index: int, name: str = "image") -> None:
        """Refuse NaN / Inf in the float outputs this artifact's post-processing reads (one line
        naming ``name`` and the output, :class:`NonFiniteOutputError`), instead of a silently empty
        or wrong result."""
        check_finite_outputs(outputs, _FLOAT_OUTPUTS.get(self.artifact.head, ()), index, name)

    def postprocess(self, outputs: dict[str, np.ndarray], index: int, geometry: Geometry) -> Result:
        """Model outputs (a batch) -> the :class:`Result` of image ``index`` at its original size."""
        return self._postprocess(outputs, index, geometry)

    def prepare(
        self, images: list[np.ndarray], names: list[str]
    ) -> tuple[np.ndarray, list[Geometry], list[list[str]]]:
        """Model input for up to one batch of images (static batches padded), their geometries
        and each image's conversion notes; unusable images raise :class:`InputError`."""
        prepared = [prepare_image(img, name, self.max_pixels) for img, name in zip(images, names)]
        batch, geometries = self.preprocessor([image for image, _ in prepared])
        n = len(prepared)
        if self.artifact.batch and n < self.artifact.batch:  # static batch: pad with copies
            batch = np.concatenate([batch, np.repeat(batch[-1:], self.artifact.batch - n, axis=0)])
        return batch, geometries, [notes for _, notes in prepared]

    def _run(self, images: list[np.ndarray], names: list[str]) -> list[Result]:
        t0 = time.perf_counter()
        batch, geometries, notes = self.prepare(images, names)
        n = len(images)
        t1 = time.perf_counter()
        outputs, split = self.backend.infer_timed({self.artifact.input_name: batch})
        t2 = time.perf_counter()
        for i in range(n):
            self.check_outputs(outputs, i, names[i])
        results = [self._postprocess(outputs, i, geometries[i]) for i in range(n)]
        t3 = time.perf_counter()
        for r, image_notes in zip(results, notes):
            r.notes = image_notes
            r.timings = {
                "pre": (t1 - t0) * 1e3 / n,
                "infer": (t2 - t1) * 1e3 / n,
                "post": (t3 - t2) * 1e3 / n,
                **{key: ms / n for key, ms in split.items()},
            }
        return results

    def _postprocess(self, outputs: dict[str, np.ndarray], i: int, geometry: Geometry) -> Result:
        head = self.artifact.head
        if head == "semantic":
            check_class_ids(outputs["labels"][i], self.artifact.num_classes)
            return Result(to_original_size(outputs["labels"][i], geometry))
        if head == "panoptic":
            id_map, segments = fuse_panoptic_outputs(
                outputs,
                i,
                self.artifact.thing_ids,
                self.artifact.num_classes,
                self.artifact.object_mask_threshold,
                self.artifact.overlap_threshold,
            )
            id_map = to_original_size(id_map, geometry)
            segments = segments_at_size(id_map, segments)
            return Result(category_map(id_map, segments, VOID), id_map, segments)
        labels, margin = self._semantic_from_raw(outputs, i)
        return Result(to_original_size(labels, geometry), margin=margin)

    def _semantic_from_raw(self, outputs: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, float]:
        """Semantic labels from raw logits (:func:`semantic_scores_from_raw`) and their mean
        confidence margin (top-1 minus top-2 class score; the fleet index's uncertainty)."""
        fmt = self.artifact.input_format
        scores = semantic_scores_from_raw(
            outputs["pred_logits"][i], outputs["pred_masks"][i], fmt.height, fmt.width
        )
        if scores.shape[-1] > 1:
            top2 = np.partition(scores, scores.shape[-1] - 2, axis=-1)[..., -2:]
            margin = float((top2[..., 1] - top2[..., 0]).mean())
        else:
            margin = float(scores.mean())
        return scores.argmax(-1).astype(np.int32), margin


class _Failure:
    """An exception travelling down the pipeline to the caller's thread."""

    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()  # end of the frame stream
_POLL_S = 0.05  # how often blocked stages look at the stop flag


def _pipeline(seg: Segmenter, frames: Iterable[np.ndarray], queue_size: int) -> Iterator[Result]:
    """Three-stage pipelined :meth:`Segmenter.stream` (pre / infer / post threads, bounded queues)."""
    stages = _Stages(seg, frames, queue_size)
    threads = [
        threading.Thread(target=f, name=f"pem-stream-{f.__name__}", daemon=True)
        for f in (stages.pre, stages.infer, stages.post)
    ]
    for t in threads:
        t.start()
    try:
        while True:
            try:
                item = stages.done.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:  # normal end, exception, close() or Ctrl-C: stop every stage and wait for it
        stages.stop.set()
        for t in threads:
            t.join()


class _Stages:
    """The three stages of :func:`_pipeline` (one thread each) and the bounded queues between
    them; every blocked stage gives up when ``stop`` is set."""

    def __init__(self, seg: Segmenter, frames: Iterable[np.ndarray], queue_size: int):
        self.seg, self.frames = seg, frames
        self.stop = threading.Event()
        self.prepared: queue.Queue[Any] = queue.Queue(queue_size)
        self.inferred: queue.Queue[Any] = queue.Queue(queue_size)
        self.done: queue.Queue[Any] = queue.Queue(queue_size)
        self.backend = backend = seg.backend
        self.submit, self.collect = getattr(backend, "submit", None), getattr(backend, "collect", None)
        # Backends with an async API and several contexts (TensorRT) keep that many frames in flight:
        # the copy-in of frame k+1 overlaps the inference of frame k.
        self.depth = int(getattr(backend, "num_contexts", 1)) if self.submit and self.collect else 1

    def put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _END

    def pre(self) -> None:
        seg, put, prepared = self.seg, self.put, self.prepared
        iterator = iter(self.frames)
        try:
            for index, frame in enumerate(iterator):
                if self.stop.is_set():
                    return
                t0 = time.perf_counter()
                batch, geometries, notes = seg.prepare([frame], [f"frame {index}"])
                if not put(prepared, (batch, geometries[0], notes[0], (time.perf_counter() - t0) * 1e3)):
                    return
            put(prepared, _END)
        except BaseException as exc:  # surfaced on the caller's thread
            put(prepared, _Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # e.g. read_video: release the capture on this thread
                close()

    def infer(self) -> None:
        put, inferred, depth, collect = self.put, self.inferred, self.depth, self.collect
        pending: collections.deque[Any] = collections.deque()
        try:
            while True:
                item = self.get(self.prepared)
                finished = item is _END or isinstance(item, _Failure)
                if not finished:
                    batch, geometry, notes, pre_ms = item
                    t0 = time.perf_counter()
                    feed = {self.seg.artifact.input_name: batch}
                    if depth > 1:
                        pending.append((self.submit(feed), geometry, notes, pre_ms, t0))  # type: ignore[misc]
                    else:
                        outputs = self.backend.infer(feed)
                        ms = (time.perf_counter() - t0) * 1e3
                        if not put(inferred, (outputs, geometry, notes, pre_ms, ms)):
                            return
                while pending and (finished or len(pending) >= depth):
                    ticket, geometry, notes, pre_ms, t0 = pending.popleft()
                    outputs = collect(ticket)  # type: ignore[misc]
                    ms = (time.perf_counter() - t0) * 1e3
                    if not put(inferred, (outputs, geometry, notes, pre_ms, ms)):
                        return
                if finished:
                    put(inferred, item)
                    return
        except BaseException as exc:
            put(inferred, _Failure(exc))
        finally:
            for ticket, *_ in pending:  # stopped early: give the contexts back
                with contextlib.suppress(Exception):
                    collect(ticket)  # type: ignore[misc]

    def post(self) -> None:
        seg, put, done = self.seg, self.put, self.done
        frame = 0
        try:
            while (item := self.get(self.inferred)) is not _END and not isinstance(item, _Failure):
                outputs, geometry, notes, pre_ms, infer_ms = item
                t0 = time.perf_counter()
                seg.check_outputs(outputs, 0, f"frame {frame}")
                frame += 1
                result = seg.postprocess(outputs, 0, geometry)
                result.notes = notes
                result.timings = {"pre": pre_ms, "infer": infer_ms, "post": (time.perf_counter() - t0) * 1e3}
                if not put(done, result):
                    return
            put(done, item)
        except BaseException as exc:
            put(done, _Failure(exc))


def read_video(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Frames of a video file as (H, W, 3) uint8 BGR arrays; errors name the file."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path}: cannot open video (missing, corrupt or unsupported codec)")
    try:
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield frame
        if count == 0:
            raise InputError(f"{path}: video has no readable frames")
    finally:
        capture.release()
