"""Calibration: activation ranges over calibration images, TensorRT caches, Q/DQ INT8 graphs.

``calibrate_ranges`` runs the FP32 model part in onnxruntime over the calibration images and
returns ``amax`` for every float tensor of the INT8 region (the backbone and pixel decoder:
the quantised nodes and everything upstream of them), stored as a TensorRT-format cache keyed
by a hash of (model, images, method, settings) and reused when present. ``quantize_model``
turns ranges into the explicit Q/DQ graph. :class:`Int8Calibrator` ties both together as the
``int8_quantizer`` of :func:`export.pipeline.export_artifact`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from calib.data import CalibrationImages
from calib.errors import CalibrationError
from calib.graph import DECODER_GROUPS, QuantTarget, check_target, find_targets
from calib.ort_layout import prepare_for_layout
from calib.quantize import model_session, quantize_model, with_outputs
from calib.ranges import METHODS, Method, RangeCollector
from calib.trt_cache import DEFAULT_TRT_VERSION, CalibrationCache, make_cache, read_cache, write_cache
from export.onnx_graph import GraphIndex
from runtime.core.preprocess import InputFormat

CALIB_FORMAT = 1  # bump when the statistics change, so old caches are not reused


@dataclass(frozen=True)
class CalibrationConfig:
    """How to calibrate.

    Args:
        data: calibration images: a Cityscapes-layout folder (``leftImg8bit/<split>``), any image
            folder, or ``"synthetic"`` (the default synthetic set).
        method: ``percentile`` (default; 99.99 % of |x|), ``minmax`` or ``entropy`` (TensorRT's
            KL-divergence rule).
        num_images: how many images to sample deterministically.
        seed: sampling seed.
        percentile: for ``percentile``.
        split: Cityscapes split to calibrate on.
        resize: the runtime's resize mode (``stretch`` / ``letterbox``).
        trt_version: TensorRT version written into the cache header.
        cache_dir: where caches are kept for reuse (default ``$PEM_DEPLOY_CACHE/calib``).
        cache_file: an explicit TensorRT cache to reuse (skips calibration) - must cover the
            model's INT8 tensors.
        reuse: reuse a cache for the same model + data + method when present.
        threads: onnxruntime intra-op threads.
        progress: a progress bar (``None``: only on a TTY).
    """

    data: str | os.PathLike[str] = "synthetic"
    method: Method = "percentile"
    num_images: int = 200
    seed: int = 0
    percentile: float = 99.99
    split: str = "train"
    resize: str = "stretch"
    trt_version: str = DEFAULT_TRT_VERSION
    cache_dir: str | os.PathLike[str] | None = None
    cache_file: str | os.PathLike[str] | None = None
    reuse: bool = True
    threads: int = 1
    progress: bool | None = None

    def validate(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"--calib-method {self.method}: choose one of {', '.join(METHODS)}")
        if self.num_images < 1:
            raise CalibrationError(f"--calib-images {self.num_images}: must be >= 1")
        if not 50.0 < self.percentile <= 100.0:
            raise CalibrationError(f"--percentile {self.percentile}: must be in (50, 100]")
        if self.resize not in ("stretch", "letterbox"):
            raise CalibrationError(f"--resize {self.resize}: choose stretch or letterbox")


@dataclass
class CalibrationRanges:
    """``amax`` per tensor, where it came from, and the cache file holding it."""

    amax: dict[str, float]
    cache: CalibrationCache
    cache_path: Path | None
    reused: bool
    images: int
    seconds: float
    key: str = ""

    def scales(self) -> dict[str, float]:
        return dict(self.cache.scales)


def default_cache_dir() -> Path:
    from pem.zoo import cache_dir

    return cache_dir() / "calib"


def input_format(
    model: onnx.ModelProto, preprocess: str = "none", size: tuple[int, int] | None = None
) -> InputFormat:
    """The runtime :class:`InputFormat` of an exported model part (``preprocess`` as in export)."""
    graph_input = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    h, w = (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else (None, None)
    if h is None or w is None:
        if size is None:
            raise CalibrationError("the model input has a dynamic size: give the calibration size")
        h, w = size
    if preprocess == "none":
        return InputFormat(int(h), int(w))
    dtype = "uint8" if preprocess == "uint8" else "float32"
    return InputFormat(int(h), int(w), dtype=dtype, normalize_in_graph=True)  # type: ignore[arg-type]


def int8_region_tensors(model: onnx.ModelProto, targets: Iterable[QuantTarget]) -> list[str]:
    """Float tensors of the INT8 region: the graph input, the quantised nodes' inputs and
    outputs, and every tensor produced upstream of them, in graph order."""
    index = GraphIndex.with_types(model)
    graph, types = model.graph, index.types
    inits = set(index.initializers)
    region: set[str] = set()
    stack = [t.node for t in targets]
    by_name = {n.name: n for n in graph.node}
    while stack:
        name = stack.pop()
        if name in region:
            continue
        region.add(name)
        for tensor in by_name[name].input:
            source = index.producer_node(tensor)
            if source is not None and source.name not in region:
                stack.append(source.name)
    names: list[str] = [i.name for i in graph.input if types.get(i.name) == TensorProto.FLOAT]
    for node in graph.node:
        if node.name not in region:
            continue
        for tensor in list(node.input) + list(node.output):
            if (
                tensor
                and tensor not in inits
                and tensor not in names
                and types.get(tensor) == TensorProto.FLOAT
            ):
                names.append(tensor)
    return names


def model_hash(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def _progress_bar(total: int, enabled: bool | None, desc: str) -> Any:
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, disable=disable, leave=False, file=sys.stderr)


def calibrate_ranges(
    model: onnx.ModelProto,
    config: CalibrationConfig,
    fmt: InputFormat,
    targets: list[QuantTarget] | None = None,
) -> CalibrationRanges:
    """``amax`` of every float tensor of the INT8 region over the calibration images (or a cache).

    Reuse order: ``config.cache_file`` when given; else the keyed cache in ``config.cache_dir``
    when ``config.reuse``; else calibrate and write that keyed cache (atomically).
    """
    config.validate()
    start = time.perf_counter()
    targets = targets if targets is not None else find_targets(model)
    tensors = int8_region_tensors(model, targets)
    needed = {t.activation for t in targets} | {t.weight for t in targets if t.weight_is_activation}
    if config.cache_file is not None:
        cache = read_cache(config.cache_file)
        missing = sorted(needed - set(cache.scales))
        if missing:
            raise CalibrationError(
                f"--calib-cache {config.cache_file}: no scale for {len(missing)} tensor(s) of this model "
                f"(e.g. {missing[0]!r}); it was calibrated for another model"
            )
        return CalibrationRanges(
            cache.amax(), cache, Path(config.cache_file), True, 0, time.perf_counter() - start
        )

    images = CalibrationImages(config.data, fmt, config.num_images, config.seed, config.split, config.resize)
    settings = {
        k: v for k, v in asdict(config).items() if k in ("method", "num_images", "seed", "split", "resize")
    }
    settings["percentile"] = config.percentile if config.method == "percentile" else None
    payload = {
        "format": CALIB_FORMAT,
        "model": model_hash(model),
        "data": images.fingerprint(),
        "settings": settings,
        "trt_version": config.trt_version,
        "input": asdict(fmt),
    }
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    folder = Path(config.cache_dir) if config.cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.cache"
    if config.reuse and path.is_file():
        cache = read_cache(path)
        if needed <= set(cache.scales):
            return CalibrationRanges(
                cache.amax(), cache, path, True, len(images), time.perf_counter() - start, key
            )

    augmented = with_outputs(model, tensors)
    session = model_session(augmented, config.threads)
    input_name = session.get_inputs()[0].name
    static_batch = session.get_inputs()[0].shape[0]
    repeat = static_batch if isinstance(static_batch, int) and static_batch > 1 else 1
    collector = RangeCollector(tensors, config.method)
    bar = _progress_bar(len(images), config.progress, f"calibrating ({config.method})")
    try:
        for batch in images:
            if repeat > 1:  # a static batch of N: the image N times (same statistics)
                batch = np.repeat(batch, repeat, axis=0)
            outputs = session.run(tensors, {input_name: batch})
            collector.update(dict(zip(tensors, outputs)))
            bar.update(1)
    finally:
        bar.close()
    amax = collector.amax(config.percentile)
    cache = make_cache(amax, config.method, config.trt_version)
    write_cache(path, cache)
    return CalibrationRanges(cache.amax(), cache, path, False, len(images), time.perf_counter() - start, key)


@dataclass
class Int8Result:
    """What one :class:`Int8Calibrator` call did (for the CLI and the reports)."""

    ranges: CalibrationRanges
    targets: list[QuantTarget]
    excluded: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    fp32_model: onnx.ModelProto | None = field(default=None, repr=False)
    int8_model: onnx.ModelProto | None = field(default=None, repr=False)


class Int8Calibrator:
    """The :class:`export.pipeline.Int8Quantizer` of this package: FP32 model part -> Q/DQ INT8.

    Args:
        config: calibration settings.
        max_drop: accuracy-aware mode: keep the most quantisation-sensitive nodes float until
            the mIoU drop (points, on ``eval_data``) is within this budget.
        eval_data: labelled Cityscapes-layout data for ``max_drop`` (default: ``config.data``).
        eval_split: its split (held out from calibration).
        eval_limit: evaluate at most this many images per step.
        layout: the target runtime, which fixes the Q/DQ layout (CLI ``--target``): ``tensorrt``
            (inputs of quantised nodes only) or ``onnxruntime`` (outputs too, fused into
            QLinearConv on CPU); see :func:`calib.graph.insert_qdq`.
        decoder: opt-in transformer-decoder groups to quantise too (:data:`calib.graph.DECODER_GROUPS`).
        progress: a step callback (``progress(message)``), as the export pipeline's.
    """

    def __init__(
        self,
        config: CalibrationConfig,
        *,
        max_drop: float | None = None,
        eval_data: str | os.PathLike[str] | None = None,
        eval_split: str = "val",
        eval_limit: int | None = None,
        layout: str = "tensorrt",
        decoder: Iterable[str] = (),
        progress: Callable[[str], None] | None = None,
    ):
        config.validate()
        self.layout = check_target(layout)
        self.decoder = tuple(decoder)
        unknown = sorted(set(self.decoder) - set(DECODER_GROUPS))
        if unknown:
            raise CalibrationError(f"decoder group {unknown[0]!r}: choose from {', '.join(DECODER_GROUPS)}")
        if max_drop is not None and max_drop < 0:
            raise CalibrationError(f"--max-drop {max_drop}: must be >= 0")
        self.config = config
        self.max_drop = max_drop
        self.eval_data = eval_data
        self.eval_split = eval_split
        self.eval_limit = eval_limit
        self.progress = progress or (lambda message: None)
        self.result: Int8Result | None = None

    def __call__(self, model: onnx.ModelProto, context: Any = None) -> onnx.ModelProto:
        preprocess = "none"
        size = None
        pem_config = None
        if context is not None:
            preprocess = context.options.preprocess
            size = tuple(context.source.config.input_size)
            pem_config = context.source.config
        fmt = input_format(model, preprocess, size)  # type: ignore[arg-type]
        if context is not None:  # recorded in the sidecar by the export pipeline
            context.info["int8"] = {
                "target": self.layout,
                "activation_dtype": "uint8" if self.layout == "onnxruntime" else "int8",
                "calibration_method": self.config.method,
            }
        model = prepare_for_layout(model, self.layout)
        targets = find_targets(model, decoder=self.decoder)
        self.progress(
            f"calibrating on {self.config.data} ({self.config.method}, {self.config.num_images} images)"
        )
        ranges = calibrate_ranges(model, self.config, fmt, targets)
        result = Int8Result(ranges=ranges, targets=targets, fp32_model=model)
        excluded: list[str] = []
        if self.max_drop is not None:
            if pem_config is None:
                raise CalibrationError("--max-drop needs the model's config (use it through export)")
            from calib.accuracy import tune_exclusions

            self.progress(
                f"accuracy-aware: keeping sensitive layers float until the drop <= {self.max_drop} points"
            )
            excluded, sensitivity, tuning = tune_exclusions(
                model,
                ranges.scales(),
                targets,
                pem_config,
                fmt,
                eval_data=self.eval_data or self.config.data,
                eval_split=self.eval_split,
                max_drop=self.max_drop,
                limit=self.eval_limit,
                threads=self.config.threads,
                layout=self.layout,
            )
            result.sensitivity, result.tuning = sensitivity, tuning
        result.excluded = excluded
        quantized = quantize_model(
            model, ranges.scales(), exclude=excluded, targets=targets, layout=self.layout
        )
        result.int8_model = quantized
        self.result = result
        return quantized
