"""The PyTorch side of parity: run the reference model on the comparison engine's images.

Everything else (the images, per-output differences, label maps, the verdict) is the one torch-free
engine, :mod:`runtime.tools.compare`. Two ways to feed PyTorch:

* :func:`torch_runner`: from the BGR image, with the model's *own* preprocessing (RGB, its config's
  mean / std), independent of the artifact's sidecar: ``check`` uses it, so a sidecar with a wrong
  colour order or normalisation fails;
* :func:`compare` (graph-level tests and benchmarks): the same graph-input tensor to both sides.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from export.errors import ExportError
from runtime.core.preprocess import InputFormat, Preprocessor
from runtime.tools.compare import (
    ComparisonImage,
    ComparisonReport,
    HeadSpec,
    ParityPolicy,
    compare_predictions,
    comparison_images,
    predict,
)
from runtime.tools.compare.engine import Runner

Sample = tuple[ComparisonImage, np.ndarray]


def input_format(input_spec: Mapping[str, Any], size: tuple[int, int] | None = None) -> InputFormat:
    """The runtime's :class:`InputFormat` of a sidecar ``input`` entry (at ``size`` or its own)."""
    shape = input_spec["shape"]
    if size is None:
        size = (
            (shape[2], shape[3])
            if isinstance(shape[2], int) and isinstance(shape[3], int)
            else tuple(input_spec["default_size"])  # type: ignore[assignment]
        )
    norm = input_spec.get("normalization") or {}
    return InputFormat(
        height=int(size[0]),  # type: ignore[index]
        width=int(size[1]),  # type: ignore[index]
        color=input_spec.get("color", "RGB"),
        dtype=input_spec.get("dtype", "float32"),
        normalize_in_graph=bool(input_spec.get("normalize_in_graph")),
        mean=tuple(norm.get("mean", InputFormat.mean)),
        std=tuple(norm.get("std", InputFormat.std)),
    )


def make_samples(
    input_spec: Mapping[str, Any],
    *,
    random: int = 0,
    scenes: int = 2,
    images: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
    batch: int | None = None,
    size: tuple[int, int] | None = None,
) -> list[Sample]:
    """The engine's images (``scenes`` street scenes, image files, ``random`` diagnostic noise) with
    their graph input, made by the runtime's preprocessing (one batch of ``batch`` copies each)."""
    fmt = input_format(input_spec, size)
    shape = input_spec["shape"]
    if batch is None:
        batch = shape[0] if isinstance(shape[0], int) else 1
    items = comparison_images(
        fmt.height, fmt.width, scenes=scenes, noise=random, seed=seed, files=images, require_deciding=False
    )
    pre = Preprocessor(fmt)
    return [(item, pre([item.image] * batch)[0]) for item in items]


def open_session(model: onnx.ModelProto | str | os.PathLike[str], threads: int = 0) -> Any:
    """onnxruntime CPU session for a model or path (errors name the file).

    Without a memory arena: a parity check runs each graph a few times next to the PyTorch model,
    and at 1024x2048 an arena would hold gigabytes while PyTorch runs.
    """
    from runtime.core.backends.ort_session import create_session

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return create_session(data, threads=threads, inter_op_threads=0, error=ExportError, memory_arena=False)


def run_reference(reference: nn.Module, x: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Run the PyTorch reference (an :class:`export.heads.ExportedModel`) on a numpy batch."""
    with torch.no_grad():
        out = reference(torch.from_numpy(np.ascontiguousarray(x)))
    return {name: t.numpy() for name, t in zip(names, out)}


def torch_runner(model: nn.Module, head: str) -> Runner:
    """A :data:`runtime.tools.compare.engine.Runner` of the PyTorch model on BGR images, preprocessed
    the model's own way (RGB, 0-255, its config's mean / std inside :class:`ExportedModel`)."""
    from export.heads import ExportedModel, output_names

    reference = ExportedModel(model, head, "normalize").eval()
    names = output_names(head)

    def run(image: np.ndarray) -> dict[str, np.ndarray]:
        rgb = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)[None]).astype(np.float32)
        return run_reference(reference, rgb, names)

    return run


def compare(
    session: Any,
    reference: nn.Module,
    samples: Sequence[Sample],
    *,
    head: str,
    num_classes: int,
    thing_ids: Sequence[int] = (),
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    graph_label: str = "onnxruntime",
    policy: ParityPolicy | None = None,
) -> ComparisonReport:
    """Graph-level parity: ``session`` and ``reference`` on the same graph inputs, judged by the engine."""
    if not samples:
        raise ExportError("nothing to compare: no samples")
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    tensors = {id(item.image): x for item, x in samples}
    items = [item for item, _ in samples]
    height, width = items[0].image.shape[:2]
    spec = HeadSpec(
        head, num_classes, height, width, frozenset(thing_ids), object_mask_threshold, overlap_threshold
    )
    meta = {"head": head, "input_size": [height, width], "num_classes": num_classes, "precision": "fp32"}
    got = predict(
        lambda image: dict(zip(names, session.run(None, {input_name: tensors[id(image)]}))),
        items,
        {**meta, "model_file": graph_label, "backend": "onnxruntime"},
    )
    ref = predict(
        lambda image: run_reference(reference, tensors[id(image)], names),
        items,
        {**meta, "model_file": "PyTorch", "backend": "torch"},
    )
    return compare_predictions(got, ref, spec, policy)
