"""Parity: run PyTorch and onnxruntime on the same inputs and compare every output.

Per output: max abs error, max error relative to the reference's largest magnitude, mean abs
error (float outputs) or the fraction of equal elements (integer outputs). Per sample: the label map
each side predicts (semantic labels; for ``raw`` the official semantic inference of the logits;
for ``panoptic`` the class map of the fused segments, 255 = void), their pixel agreement and the
mIoU between the two predictions (over the classes either of them predicts).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from contract.parity_policy import ParityPolicy
from export.errors import ExportError
from runtime.diff_table import name_width, row
from runtime.postprocess import category_map, fuse_panoptic_outputs
from runtime.scenes import paint_cars_and_noise

VOID_LABEL = 255
Sample = tuple[str, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Inputs


def synthetic_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic street-like RGB image (H, W, 3) uint8: sky, buildings, road, cars, noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = np.empty((height, width, 3), np.float32)
    image[:] = (1 - y) * np.array([70, 130, 200], np.float32) + y * np.array([150, 170, 190], np.float32)
    horizon = int(height * rng.uniform(0.4, 0.55))
    x0 = 0
    while x0 < width:  # buildings
        bw = int(rng.integers(width // 12 + 1, width // 5 + 2))
        top = int(rng.integers(height // 10, horizon))
        image[top:horizon, x0 : x0 + bw] = rng.integers(50, 160, 3)
        x0 += bw
    image[horizon:] = np.array([128, 64, 128], np.float32) * 0.6 + 40  # road
    image[horizon : horizon + max(1, height // 40)] = (244, 35, 232)  # sidewalk edge
    cars = int(rng.integers(2, 6))
    return paint_cars_and_noise(image, rng, horizon, cars, (height // 16 + 1, height // 6 + 2))


def load_image(path: str | os.PathLike[str], height: int, width: int) -> np.ndarray:
    """An image file as (height, width, 3) uint8 RGB (resized bilinearly); errors name the file."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"--image {path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ExportError(f"--image {path}: not a readable image")
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(image[:, :, ::-1])


def to_model_input(images: Sequence[np.ndarray], input_spec: dict[str, Any]) -> np.ndarray:
    """(H, W, 3) uint8 RGB images -> the graph input described by a sidecar's ``input`` entry."""
    batch = np.stack([img.transpose(2, 0, 1) for img in images])  # (B, 3, H, W) uint8
    if input_spec.get("dtype") == "uint8":
        return batch
    x = batch.astype(np.float32)
    if input_spec.get("normalize_in_graph"):
        return x
    norm = input_spec["normalization"]
    mean = np.asarray(norm["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(norm["std"], np.float32).reshape(1, 3, 1, 1)
    return (x - mean) / std


def make_samples(
    input_spec: dict[str, Any],
    *,
    random: int = 2,
    scenes: int = 1,
    images: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
    batch: int | None = None,
    size: tuple[int, int] | None = None,
) -> list[Sample]:
    """Named graph inputs: ``random`` noise images, ``scenes`` synthetic street scenes, image files.

    Each sample is one batch of ``batch`` images (the graph's static batch, else 1) at ``size``
    (default: the input's static size or its ``default_size``).
    """
    shape = input_spec["shape"]
    if batch is None:
        batch = shape[0] if isinstance(shape[0], int) else 1
    if size is None:
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            size = (shape[2], shape[3])
        else:
            size = tuple(input_spec["default_size"])  # type: ignore[assignment]
    h, w = size  # type: ignore[misc]
    rng = np.random.default_rng(seed)
    samples: list[Sample] = []
    for i in range(random):
        imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
        samples.append((f"random[{i}]", to_model_input(imgs, input_spec)))
    for i in range(scenes):
        imgs = [synthetic_scene(h, w, seed + 1000 * i + j) for j in range(batch)]
        samples.append((f"scene[{i}]", to_model_input(imgs, input_spec)))
    for path in images:
        img = load_image(path, h, w)
        samples.append((f"image:{Path(path).name}", to_model_input([img] * batch, input_spec)))
    return samples


# ---------------------------------------------------------------------------------------------
# Comparison


@dataclass
class TensorDiff:
    """Difference of one output: float stats, or agreement for integer outputs."""

    name: str
    dtype: str
    max_abs: float
    max_rel: float
    mean_abs: float
    agreement: float  # fraction of elements equal (1.0 for float outputs within rounding is rare)
    scale: float = 0.0  # largest magnitude of the reference (for relative tolerances)


@dataclass
class SampleResult:
    """One input: per-output differences, label agreement and mIoU between the predictions."""

    label: str
    diffs: dict[str, TensorDiff]
    label_agreement: float
    miou: float


@dataclass
class ParityReport:
    """Parity of an ONNX graph against the PyTorch reference over several inputs."""

    head: str
    graph: str
    samples: list[SampleResult] = field(default_factory=list)

    def worst(self, name: str) -> TensorDiff:
        """Worst case of output ``name`` over the samples."""
        diffs = [s.diffs[name] for s in self.samples]
        return TensorDiff(
            name,
            diffs[0].dtype,
            max(d.max_abs for d in diffs),
            max(d.max_rel for d in diffs),
            max(d.mean_abs for d in diffs),
            min(d.agreement for d in diffs),
            max(d.scale for d in diffs),
        )

    @property
    def output_names(self) -> list[str]:
        return list(self.samples[0].diffs) if self.samples else []

    @property
    def label_agreement(self) -> float:
        """Lowest per-sample label agreement."""
        return min(s.label_agreement for s in self.samples)

    @property
    def miou(self) -> float:
        """Lowest per-sample mIoU between the two predictions."""
        return min(s.miou for s in self.samples)

    def failures(self, policy: ParityPolicy) -> list[str]:
        """Violated thresholds of the shared parity policy, as readable lines (empty: passed)."""
        problems = []
        for name in policy.tolerances:
            if name in self.output_names:
                worst = self.worst(name)
                problem = policy.float_failure(name, worst.max_abs, worst.scale)
                if problem:
                    problems.append(problem)
        if self.label_agreement < policy.min_label_agreement:
            problems.append(f"label agreement {self.label_agreement:.5%} < {policy.min_label_agreement:.3%}")
        return problems

    def table(self) -> str:
        """Readable per-sample and worst-case table."""
        lines = [f"parity: {self.graph} vs PyTorch (head {self.head})"]
        w = name_width((s.label for s in self.samples), 20)
        lines.append(
            row("sample", "output", w, f"{'max abs':>11}{'max rel':>11}{'mean abs':>11}{'equal':>10}")
        )
        for s in self.samples:
            for d in s.diffs.values():
                if is_index_output(d):  # ids and classes: equal or not, no float error to speak of
                    figures = f"{'(index output)':>33}"
                else:
                    figures = f"{d.max_abs:>11.3g}{d.max_rel:>11.3g}{d.mean_abs:>11.3g}"
                lines.append(row(s.label, d.name, w, f"{figures}{d.agreement:>10.4%}"))
            agreement = f"agreement {s.label_agreement:.5%}  mIoU {s.miou:.5f}"
            lines.append(row(s.label, "labels", w, agreement))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "graph": self.graph,
            **_scores(self),
            "outputs": {n: vars(self.worst(n)) for n in self.output_names},
            "samples": [{"label": s.label, **_scores(s)} for s in self.samples],
        }


def _scores(result: SampleResult | ParityReport) -> dict[str, float]:
    """Label agreement and mIoU as the report writes them, for itself (its worst sample) and each sample."""
    return {"label_agreement": result.label_agreement, "miou": result.miou}


def is_index_output(diff: TensorDiff) -> bool:
    """Integer and boolean outputs (labels, owner, classes, areas) are compared for equality."""
    return np.dtype(diff.dtype).kind in "iub"


def tensor_diff(name: str, got: np.ndarray, ref: np.ndarray) -> TensorDiff:
    """Compare one output (``got`` from ONNX, ``ref`` from PyTorch)."""
    if got.shape != ref.shape:
        raise ExportError(f"output {name}: shape {got.shape} differs from PyTorch's {ref.shape}")
    a = got.astype(np.float64)
    b = ref.astype(np.float64)
    err = np.abs(a - b)
    max_abs = float(err.max()) if err.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    return TensorDiff(
        name=name,
        dtype=str(got.dtype),
        max_abs=max_abs,
        max_rel=max_abs / scale if scale > 0 else max_abs,
        mean_abs=float(err.mean()) if err.size else 0.0,
        agreement=float((got == ref).mean()) if got.size else 1.0,
        scale=scale,
    )


def mean_iou(pred: np.ndarray, ref: np.ndarray, ignore: int = VOID_LABEL) -> float:
    """mIoU of ``pred`` against ``ref`` over the classes present in either (``ignore`` excluded)."""
    classes = np.union1d(np.unique(pred), np.unique(ref))
    classes = classes[classes != ignore]
    if classes.size == 0:
        return 1.0
    ious = []
    for c in classes:
        a, b = pred == c, ref == c
        ious.append(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())
    return float(np.mean(ious))


def labels_from_outputs(
    head: str,
    outputs: dict[str, np.ndarray],
    *,
    num_classes: int,
    thing_ids: Sequence[int] = (),
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> np.ndarray:
    """(B, H, W) int32 class map from a head's outputs (panoptic: 255 = void)."""
    if head == "semantic":
        return outputs["labels"].astype(np.int32)
    if head == "raw":
        scores = semantic_scores(outputs["pred_logits"], outputs["pred_masks"])
        return scores.argmax(1).to(torch.int32).numpy()
    maps = []
    for i in range(outputs["owner"].shape[0]):
        id_map, segments = fuse_panoptic_outputs(
            outputs, i, thing_ids, num_classes, object_mask_threshold, overlap_threshold
        )
        maps.append(category_map(id_map, segments))
    return np.stack(maps)


#: Queries upsampled at a time by :func:`semantic_scores` (at 1024x2048: 16 x 8 MiB per query).
SCORE_QUERY_CHUNK = 16


def semantic_scores(pred_logits: np.ndarray, pred_masks: np.ndarray) -> torch.Tensor:
    """:func:`pem.inference.semantic_inference` at 4x the mask size, summed over chunks of queries.

    The same scores up to float summation order, without the (B, Q, H, W) float tensors of every
    query's upsampled mask and its sigmoid (1.6 GiB for 100 queries at 1024x2048).
    """
    logits = torch.from_numpy(pred_logits.astype(np.float32))
    masks = torch.from_numpy(pred_masks.astype(np.float32))
    size = (masks.shape[-2] * 4, masks.shape[-1] * 4)
    probs = logits.softmax(dim=-1)[..., :-1]  # (B, Q, K)
    scores = torch.zeros(masks.shape[0], probs.shape[-1], *size)
    for start in range(0, masks.shape[1], SCORE_QUERY_CHUNK):
        part = slice(start, start + SCORE_QUERY_CHUNK)
        up = F.interpolate(masks[:, part], size=size, mode="bilinear", align_corners=False).sigmoid_()
        scores += torch.einsum("bqk,bqhw->bkhw", probs[:, part], up)
    return scores


def semantic_margin(pred_logits: np.ndarray, pred_masks: np.ndarray) -> np.ndarray:
    """(B, H, W) gap between the best and second-best class score of the semantic inference.

    Small gaps are near-ties that any rounding may flip (typical of random weights).
    """
    scores = semantic_scores(pred_logits, pred_masks)
    top2 = scores.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]).numpy()


def open_session(model: onnx.ModelProto | str | os.PathLike[str], threads: int = 0) -> Any:
    """onnxruntime CPU session for a model or path (errors name the file).

    Without a memory arena: a parity check runs each graph a few times next to the PyTorch model,
    and at 1024x2048 an arena would hold gigabytes while PyTorch runs.
    """
    from runtime.backends.ort_session import create_session

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return create_session(data, threads=threads, inter_op_threads=0, error=ExportError, memory_arena=False)


def run_reference(reference: nn.Module, x: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Run the PyTorch reference (an :class:`export.heads.ExportedModel`) on a numpy batch."""
    with torch.no_grad():
        out = reference(torch.from_numpy(np.ascontiguousarray(x)))
    return {name: t.numpy() for name, t in zip(names, out)}


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
) -> ParityReport:
    """Run ``session`` (onnxruntime) and ``reference`` (PyTorch) on every sample and compare."""
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    report = ParityReport(head=head, graph=graph_label)
    kwargs = {
        "num_classes": num_classes,
        "thing_ids": thing_ids,
        "object_mask_threshold": object_mask_threshold,
        "overlap_threshold": overlap_threshold,
    }
    for label, x in samples:
        got = dict(zip(names, session.run(None, {input_name: x})))
        ref = run_reference(reference, x, names)
        diffs = {n: tensor_diff(n, got[n], ref[n]) for n in names}
        got_labels = labels_from_outputs(head, got, **kwargs)
        ref_labels = labels_from_outputs(head, ref, **kwargs)
        report.samples.append(
            SampleResult(
                label=label,
                diffs=diffs,
                label_agreement=float((got_labels == ref_labels).mean()),
                miou=mean_iou(got_labels, ref_labels),
            )
        )
    return report
