"""The comparison engine: one side's predictions, per-output differences, the verdict. Torch-free.

``check`` (PyTorch reference), ``verify`` (an artifact or a saved reference), the demo and
calibrate all produce two :class:`Prediction` objects on the same :mod:`runtime.tools.compare.inputs`
images and call :func:`compare_predictions`; the verdict follows :mod:`runtime.tools.compare.policy`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from contract.errors import ArtifactError
from contract.sidecar_records import HEAD_OUTPUTS
from runtime.core.postprocess import category_map, check_class_ids, fuse_panoptic, semantic_scores_from_raw
from runtime.errors import OutputRangeError
from runtime.tools.compare.diff_table import name_width, row
from runtime.tools.compare.inputs import ComparisonImage
from runtime.tools.compare.policy import FLOAT_OUTPUTS, JUDGED_THROUGH, ParityPolicy, policy_for

VOID = 255
SEGMENT_IOU = 0.5


class ComparisonError(ArtifactError):
    """The two sides cannot be compared (heads, sizes, classes or outputs differ; bad reference)."""


# ---------------------------------------------------------------------------------------------
# One side


@dataclass(frozen=True)
class HeadSpec:
    """What turning a head's outputs into label maps and segments needs (from the sidecar)."""

    head: str
    num_classes: int
    height: int
    width: int
    thing_ids: frozenset[int] = frozenset()
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8

    @classmethod
    def from_artifact(cls, artifact: Any) -> HeadSpec:
        """From a :class:`runtime.core.artifact.Artifact`."""
        fmt = artifact.input_format
        return cls(
            artifact.head,
            artifact.num_classes,
            fmt.height,
            fmt.width,
            frozenset(artifact.thing_ids),
            artifact.object_mask_threshold,
            artifact.overlap_threshold,
        )


@dataclass
class Prediction:
    """What one side computes on a set of images: every output, per image (batch axis removed).

    ``meta``: ``model_file``, ``backend``, ``head``, ``precision``, ``input_size`` and
    ``num_classes`` (compared before anything else), plus anything descriptive.
    """

    meta: dict[str, Any]
    names: list[str]
    decides: list[bool]
    images: list[np.ndarray]
    outputs: list[dict[str, np.ndarray]]

    def comparison_images(self) -> list[ComparisonImage]:
        """The images this side ran on (to run the other side on the same ones)."""
        return [ComparisonImage(n, i, d) for n, i, d in zip(self.names, self.images, self.decides)]


Runner = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""Runs one BGR image (model size) and returns the model's batched outputs (image 0 is used)."""


def predict(run: Runner, images: Sequence[ComparisonImage], meta: dict[str, Any]) -> Prediction:
    """Run ``run`` on every image; keeps every output of rank >= 1 of batch item 0."""
    out = Prediction(dict(meta), [], [], [], [])
    for item in images:
        raw = run(item.image)
        out.names.append(item.name)
        out.decides.append(item.decides)
        out.images.append(item.image)
        out.outputs.append({k: np.asarray(v)[0] for k, v in raw.items() if np.ndim(v) >= 1})
    return out


def artifact_meta(artifact: Any) -> dict[str, Any]:
    """The ``meta`` of a :class:`Prediction` from a runtime artifact."""
    fmt = artifact.input_format
    return {
        "model_file": artifact.model_path.name,
        "sha256": artifact.spec.provenance.sha256,
        "backend": artifact.backend,
        "head": artifact.head,
        "precision": artifact.precision,
        "input_size": [fmt.height, fmt.width],
        "num_classes": artifact.num_classes,
    }


def predict_artifact(
    path: str | os.PathLike[str],
    images: Sequence[ComparisonImage],
    providers: list[str] | None = None,
    threads: int = 0,
) -> tuple[Prediction, HeadSpec]:
    """Run an artifact (ONNX or engine) through the runtime: its sidecar's preprocessing, its backend."""
    from runtime.core.artifact import load_artifact
    from runtime.core.segmenter import Segmenter, open_backend

    artifact = load_artifact(path)
    backend = open_backend(artifact, providers=providers, threads=threads)
    spec = HeadSpec.from_artifact(artifact)
    for item in images:
        if item.image.shape[:2] != (spec.height, spec.width):
            raise ComparisonError(
                f"{artifact.model_path}: input size {spec.height}x{spec.width} differs from the "
                f"reference images' {item.image.shape[0]}x{item.image.shape[1]}"
            )
    with Segmenter(artifact, backend) as seg:

        def run(image: np.ndarray) -> Mapping[str, np.ndarray]:
            batch, _, _ = seg.prepare([image], ["image"])
            return backend.infer({artifact.input_name: batch})

        return predict(run, images, artifact_meta(artifact)), spec


@dataclass
class Interpretation:
    """Label map (panoptic: the segments' classes, 255 void), and for panoptic heads the id map and
    segment id -> class; ``scores``: (H, W, K) class scores where the head gives them (raw)."""

    labels: np.ndarray
    panoptic: np.ndarray | None = None
    segment_classes: dict[int, int] = field(default_factory=dict)
    scores: np.ndarray | None = None


def interpret(spec: HeadSpec, outputs: Mapping[str, np.ndarray]) -> Interpretation:
    """One image's outputs -> :class:`Interpretation`, by the runtime's own post-processing.

    Raises:
        OutputRangeError: class or query ids out of range (the outputs are not valid).
    """
    if spec.head == "semantic":
        labels = np.asarray(outputs["labels"]).astype(np.int32)
        check_class_ids(labels, spec.num_classes)
        return Interpretation(labels)
    if spec.head == "panoptic":
        id_map, segments = fuse_panoptic(
            np.asarray(outputs["scores"], np.float32),
            np.asarray(outputs["classes"]),
            np.asarray(outputs["owner"]),
            np.asarray(outputs["owner_fg"]),
            np.asarray(outputs["mask_area"]),
            spec.thing_ids,
            spec.num_classes,
            spec.object_mask_threshold,
            spec.overlap_threshold,
        )
        return Interpretation(
            category_map(id_map, segments, VOID), id_map, {s.id: s.category_id for s in segments}
        )
    with np.errstate(over="ignore", invalid="ignore"):
        scores = semantic_scores_from_raw(
            outputs["pred_logits"], outputs["pred_masks"], spec.height, spec.width
        )
    return Interpretation(scores.argmax(-1).astype(np.int32), scores=scores)


# ---------------------------------------------------------------------------------------------
# Metrics


def mean_iou(pred: np.ndarray, ref: np.ndarray, ignore: int = VOID, min_share: float = 0.0) -> float:
    """mIoU of ``pred`` against ``ref`` over the classes present in either (``ignore`` excluded).

    ``min_share``: only classes covering at least this share of the pixels on either side count
    (a class of a few pixels is all or nothing: it would swing the mean by itself).
    """
    pred = pred.astype(np.int64, copy=False).ravel()
    ref = ref.astype(np.int64, copy=False).ravel()
    classes = np.union1d(np.unique(pred), np.unique(ref))
    classes = classes[classes != ignore]
    ious = []
    for c in classes:
        a, b = pred == c, ref == c
        if max(a.mean(), b.mean()) < min_share:
            continue
        ious.append(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())
    return float(np.mean(ious)) if ious else 1.0


def segment_match(
    ref_ids: np.ndarray, ref_classes: Mapping[int, int], got_ids: np.ndarray, got_classes: Mapping[int, int]
) -> tuple[int, int, int]:
    """(matched, reference segments, candidate segments) between two panoptic id maps.

    Segments match when they have the same class and IoU > 0.5 (unique by construction, as in
    panoptic quality). ``*_classes`` map segment id -> class id; id 0 is void.
    """
    ref_ids = ref_ids.astype(np.int64, copy=False).ravel()
    got_ids = got_ids.astype(np.int64, copy=False).ravel()
    n_ref = int(ref_ids.max(initial=0)) + 1
    n_got = int(got_ids.max(initial=0)) + 1
    joint = np.bincount(ref_ids * n_got + got_ids, minlength=n_ref * n_got).reshape(n_ref, n_got)
    ref_area, got_area = joint.sum(1), joint.sum(0)
    matched = 0
    for r, r_cls in ref_classes.items():
        if r <= 0 or r >= n_ref:
            continue
        for g, g_cls in got_classes.items():
            if g <= 0 or g >= n_got or g_cls != r_cls:
                continue
            inter = joint[r, g]
            union = ref_area[r] + got_area[g] - inter
            if union and inter / union > SEGMENT_IOU:
                matched += 1
                break
    return matched, len([r for r in ref_classes if r > 0]), len([g for g in got_classes if g > 0])


def segment_match_rate(matched: int, n_ref: int, n_got: int) -> float:
    """Matched fraction of all segments of both sides (F1 of the matching; 1.0 when both are empty)."""
    total = n_ref + n_got
    return 1.0 if total == 0 else 2.0 * matched / total


def confident_pixels(reference: Interpretation, boundary_px: int, min_margin: float) -> np.ndarray:
    """(H, W) bool: pixels farther than ``boundary_px`` from a class boundary of the reference and,
    where the reference gives class scores, with a top-1 / top-2 margin of at least ``min_margin``."""
    labels = reference.labels.astype(np.int32)
    size = 2 * boundary_px + 1
    kernel = np.ones((size, size), np.uint8)
    as_float = labels.astype(np.float32)  # cv2 morphology: float32 holds every class id exactly
    confident = cv2.erode(as_float, kernel, borderType=cv2.BORDER_REPLICATE) == cv2.dilate(
        as_float, kernel, borderType=cv2.BORDER_REPLICATE
    )
    if reference.scores is not None and reference.scores.shape[-1] >= 2:
        top2 = np.partition(reference.scores, -2, axis=-1)[..., -2:]
        with np.errstate(invalid="ignore"):
            confident &= (top2[..., 1] - top2[..., 0]) >= min_margin
    return confident


# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class OutputDiff:
    """One output on one image. ``role``: how the policy judges it (``relative error``,
    ``judged through ...`` or ``informational``)."""

    name: str
    dtype: str
    role: str
    max_abs: float
    mean_abs: float
    reference_mean_abs: float
    relative_error: float
    agreement: float
    non_finite_candidate: int = 0
    non_finite_reference: int = 0
    reference_max_abs: float = 0.0

    @property
    def max_rel(self) -> float:
        """Largest error relative to the reference's largest magnitude."""
        return self.max_abs / self.reference_max_abs if self.reference_max_abs > 0 else self.max_abs

    @property
    def is_index(self) -> bool:
        return np.dtype(self.dtype).kind in "iub"


@dataclass
class SampleDiff:
    """One image: its outputs' differences and what the two label maps / segments agree on."""

    name: str
    decides: bool
    outputs: dict[str, OutputDiff]
    label_agreement: float = math.nan
    confident_agreement: float = math.nan
    low_margin_share: float = math.nan
    miou: float = math.nan
    segments: tuple[int, int, int] | None = None
    segment_match: float | None = None


@dataclass
class Criterion:
    """One threshold of the policy against the worst deciding image."""

    what: str
    value: float
    limit: float
    higher_is_better: bool
    sample: str

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    @property
    def margin(self) -> float:
        """Distance to the limit, positive on the passing side."""
        return self.value - self.limit if self.higher_is_better else self.limit - self.value

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        state = "ok " if self.passed else "FAIL"
        figures = f"{self.value:>11.5g} {op} {self.limit:<9.5g} margin {self.margin:+.4g}"
        return f"{state} {self.what:<44}{figures} ({self.sample})"


@dataclass
class ComparisonReport:
    """The verdict of :func:`compare_predictions`."""

    candidate: dict[str, Any]
    reference: dict[str, Any]
    policy: ParityPolicy
    head: str
    samples: list[SampleDiff]
    criteria: list[Criterion]
    failures: list[str]
    roles: dict[str, str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def worst(self, name: str) -> OutputDiff:
        """Worst case of output ``name`` over every image (diagnostic ones included)."""
        diffs = [s.outputs[name] for s in self.samples if name in s.outputs]
        if not diffs:
            raise KeyError(name)
        return OutputDiff(
            name,
            diffs[0].dtype,
            diffs[0].role,
            max(d.max_abs for d in diffs),
            max(d.mean_abs for d in diffs),
            max(d.reference_mean_abs for d in diffs),
            max(d.relative_error for d in diffs),
            min(d.agreement for d in diffs),
            sum(d.non_finite_candidate for d in diffs),
            sum(d.non_finite_reference for d in diffs),
            max(d.reference_max_abs for d in diffs),
        )

    @property
    def label_agreement(self) -> float:
        """Lowest label agreement (all pixels) over every image."""
        return min((s.label_agreement for s in self.samples), default=math.nan)

    @property
    def confident_agreement(self) -> float:
        """Lowest confident-pixel label agreement over the deciding images."""
        return min((s.confident_agreement for s in self.samples if s.decides), default=math.nan)

    @property
    def miou(self) -> float:
        """Lowest mIoU between the predictions over every image."""
        return min((s.miou for s in self.samples), default=math.nan)

    def criterion(self, what: str) -> Criterion:
        """The criterion whose name starts with ``what``."""
        return next(c for c in self.criteria if c.what.startswith(what))

    def verdict(self) -> str:
        """``PASS (policy)`` or ``FAIL: reasons``."""
        if self.failures:
            return "FAIL: " + "; ".join(self.failures)
        return f"PASS ({self.policy.describe(self.head)})"

    def table(self, title: str | None = None) -> str:
        """Per image and output, the criteria with their margins, and the verdict."""
        w = name_width((s.name + ("*" if not s.decides else "") for s in self.samples), 14)
        lines = [
            title
            or (
                f"compare: {self.candidate.get('model_file')} ({self.candidate.get('backend')}, "
                f"{self.candidate.get('precision')}) vs {self.reference.get('model_file')} "
                f"({self.reference.get('backend')}, {self.reference.get('precision')})"
            ),
            row("image", "output", w, f"{'max abs':>11}{'rel. err':>11}{'equal':>10}  judged by"),
        ]
        for s in self.samples:
            label = s.name + ("" if s.decides else "*")
            for d in s.outputs.values():
                bad = d.non_finite_candidate + d.non_finite_reference
                figures = (
                    f"{'(index)':>11}{'':>11}"
                    if d.is_index
                    else f"{d.max_abs:>11.3g}{d.relative_error:>11.3g}"
                )
                note = f"  {bad} NaN/Inf" if bad else ""
                # Identical elements mean something for ids only; floats are judged by their error.
                equal = f"{d.agreement:>10.3%}" if d.is_index else f"{'-':>10}"
                lines.append(row(label, d.name, w, f"{figures}{equal}  {d.role}{note}"))
            seg = ""
            if s.segments is not None and s.segment_match is not None:
                m, r, g = s.segments
                seg = f"  segments {m} matched of {r} ref / {g} cand ({s.segment_match:.1%})"
            lines.append(
                row(
                    label,
                    "labels",
                    w,
                    f"agreement {s.label_agreement:.3%}, confident {s.confident_agreement:.3%} "
                    f"({s.low_margin_share:.1%} low-margin), mIoU {s.miou:.4f}{seg}",
                )
            )
        if any(not s.decides for s in self.samples):
            lines.append("  * noise: a diagnostic only, it does not decide the verdict")
        lines.append("equal: identical elements of integer outputs (floats: '-', judged by their error)")
        lines.append("criteria (worst deciding image; margin: distance to the limit, + = passing side):")
        lines += ["  " + c.line() for c in self.criteria]
        lines.append(self.verdict())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN written as null)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            return value

        return clean(
            {
                "passed": self.passed,
                "failures": self.failures,
                "candidate": self.candidate,
                "reference": self.reference,
                "policy": self.policy.describe(self.head),
                "roles": self.roles,
                "criteria": [{**vars(c), "passed": c.passed, "margin": c.margin} for c in self.criteria],
                "samples": [
                    {
                        "name": s.name,
                        "decides": s.decides,
                        "label_agreement": s.label_agreement,
                        "confident_agreement": s.confident_agreement,
                        "low_margin_share": s.low_margin_share,
                        "miou": s.miou,
                        "segment_match": s.segment_match,
                        "outputs": {n: vars(d) for n, d in s.outputs.items()},
                    }
                    for s in self.samples
                ],
            }
        )


# ---------------------------------------------------------------------------------------------
# Comparing


def required_outputs(head: str) -> tuple[str, ...]:
    """The outputs a head promises (the sidecar schema's table): the policy judges each of them."""
    return tuple(HEAD_OUTPUTS.get(head, {}))


def roles(head: str, names: Sequence[str]) -> dict[str, str]:
    """How each shown output is judged."""
    out = {}
    for name in names:
        if name in FLOAT_OUTPUTS.get(head, ()):
            out[name] = "relative error"
        elif name in JUDGED_THROUGH.get(head, {}):
            out[name] = "via " + JUDGED_THROUGH[head][name]
        else:
            out[name] = "informational"
    return out


def _check_comparable(candidate: Prediction, reference: Prediction) -> None:
    who = candidate.meta.get("model_file")
    for key in ("head", "input_size", "num_classes"):
        if candidate.meta.get(key) != reference.meta.get(key):
            raise ComparisonError(
                f"{who}: {key} {candidate.meta.get(key)} differs from the reference's "
                f"{reference.meta.get(key)} ({reference.meta.get('model_file')})"
            )
    if candidate.names != reference.names or len(candidate.outputs) != len(reference.outputs):
        raise ComparisonError(f"{who}: ran on other images than the reference")
    head = str(reference.meta.get("head"))
    for side, pred in (("candidate", candidate), ("reference", reference)):
        for name in required_outputs(head):
            if any(name not in o for o in pred.outputs):
                raise ComparisonError(
                    f"{side} {pred.meta.get('model_file')} lacks output '{name}', which the policy "
                    f"judges for {head} heads"
                )


def output_diff(name: str, role: str, got: np.ndarray, ref: np.ndarray) -> OutputDiff:
    """Differences of one output (same shapes): errors, relative error, equal share, NaN / Inf counts."""
    a = got.astype(np.float64)
    b = ref.astype(np.float64)
    bad_a = int(np.size(a) - np.isfinite(a).sum())
    bad_b = int(np.size(b) - np.isfinite(b).sum())
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - b)
    finite = np.isfinite(err)
    max_abs = float(err[finite].max()) if finite.any() else (math.inf if err.size else 0.0)
    mean_abs = float(err.mean()) if err.size else 0.0
    ref_mean = float(np.abs(b).mean()) if b.size else 0.0
    relative = mean_abs / ref_mean if ref_mean > 0 else mean_abs
    agreement = float((got == ref).mean()) if got.size else 1.0
    finite_ref = np.abs(b[np.isfinite(b)])
    ref_max = float(finite_ref.max()) if finite_ref.size else 0.0
    return OutputDiff(
        name, str(got.dtype), role, max_abs, mean_abs, ref_mean, relative, agreement, bad_a, bad_b, ref_max
    )


def compare_predictions(
    candidate: Prediction,
    reference: Prediction,
    spec: HeadSpec,
    policy: ParityPolicy | None = None,
) -> ComparisonReport:
    """Judge ``candidate`` against ``reference`` (same images) under ``policy`` (default: the
    candidate's precision's).

    Raises:
        ComparisonError: the two cannot be compared (head, size, classes, images, a required output).
    """
    _check_comparable(candidate, reference)
    policy = policy or policy_for(str(candidate.meta.get("precision", "fp32")))
    head = spec.head
    failures: list[str] = []
    shown = [n for n in reference.outputs[0] if n in candidate.outputs[0]] if reference.outputs else []
    output_roles = roles(head, shown)
    boundary = policy.boundary_px(spec.height, spec.width)
    samples: list[SampleDiff] = []
    non_finite: dict[str, list[str]] = {}
    for i, name in enumerate(reference.names):
        diffs: dict[str, OutputDiff] = {}
        for out_name in shown:
            got, ref = np.asarray(candidate.outputs[i][out_name]), np.asarray(reference.outputs[i][out_name])
            if got.shape != ref.shape:
                failures.append(
                    f"{out_name}: shape {got.shape} differs from the reference's {ref.shape} ({name})"
                )
                continue
            d = output_diff(out_name, output_roles[out_name], got, ref)
            diffs[out_name] = d
            for side, count in (("candidate", d.non_finite_candidate), ("reference", d.non_finite_reference)):
                if count:
                    non_finite.setdefault(f"{out_name} of the {side}", []).append(name)
        sample = SampleDiff(name, reference.decides[i], diffs)
        try:
            ref_view = interpret(spec, reference.outputs[i])
        except OutputRangeError as exc:
            raise ComparisonError(f"reference {reference.meta.get('model_file')}: {exc}") from None
        try:
            got_view = interpret(spec, candidate.outputs[i])
        except OutputRangeError as exc:
            failures.append(f"candidate outputs out of range on {name}: {exc}")
            samples.append(sample)
            continue
        _judge_labels(sample, got_view, ref_view, head, policy, boundary)
        samples.append(sample)
    for what, where in non_finite.items():
        failures.insert(
            0, f"{what} holds NaN / Inf (on {', '.join(where[:3])}{'...' if len(where) > 3 else ''})"
        )
    deciding = [s for s in samples if s.decides]
    criteria = _criteria(deciding, head, policy)
    if not any(not math.isnan(s.label_agreement) for s in deciding) and not failures:
        failures.append("no deciding image could be judged")
    for c in criteria:
        if not c.passed:
            op = ">=" if c.higher_is_better else "<="
            failures.append(f"{c.what} {c.value:.5g} on {c.sample}, needs {op} {c.limit:g}")
    return ComparisonReport(
        candidate.meta, reference.meta, policy, head, samples, criteria, failures, output_roles
    )


def _judge_labels(
    sample: SampleDiff,
    got_view: Interpretation,
    ref_view: Interpretation,
    head: str,
    policy: ParityPolicy,
    boundary: int,
) -> None:
    """Fill ``sample``'s label agreement (all and confident pixels), mIoU and panoptic match."""
    agree = got_view.labels == ref_view.labels
    confident = confident_pixels(ref_view, boundary, policy.min_margin)
    sample.label_agreement = float(agree.mean())
    sample.low_margin_share = float(1.0 - confident.mean())
    sample.confident_agreement = float(agree[confident].mean()) if confident.any() else 1.0
    sample.miou = mean_iou(got_view.labels, ref_view.labels, min_share=policy.miou_min_share)
    if head == "panoptic" and ref_view.panoptic is not None and got_view.panoptic is not None:
        sample.segments = segment_match(
            ref_view.panoptic, ref_view.segment_classes, got_view.panoptic, got_view.segment_classes
        )
        sample.segment_match = segment_match_rate(*sample.segments)


def _criteria(deciding: list[SampleDiff], head: str, policy: ParityPolicy) -> list[Criterion]:
    """The policy's criteria, each at its worst deciding image."""
    criteria: list[Criterion] = []
    for out_name in FLOAT_OUTPUTS.get(head, ()):
        limit = policy.max_relative_error.get(out_name)
        values = [(s.outputs[out_name].relative_error, s.name) for s in deciding if out_name in s.outputs]
        if limit is not None and values:
            value, where = max(values, key=lambda v: -math.inf if math.isnan(v[0]) else v[0])
            criteria.append(Criterion(f"{out_name} relative error", value, limit, False, where))
    judged = [s for s in deciding if not math.isnan(s.label_agreement)]
    if not judged:
        return criteria
    low = min(judged, key=lambda s: s.confident_agreement)
    criteria.append(
        Criterion(
            f"label agreement, confident ({low.low_margin_share:.1%} low-margin)",
            low.confident_agreement,
            policy.min_confident_agreement,
            True,
            low.name,
        )
    )
    low = min(judged, key=lambda s: s.miou)
    criteria.append(Criterion("mIoU between the predictions", low.miou, policy.min_miou, True, low.name))
    matched = [s for s in judged if s.segment_match is not None]
    if matched:
        low = min(matched, key=lambda s: s.segment_match or 0.0)
        criteria.append(
            Criterion(
                "panoptic segment match",
                float(low.segment_match or 0.0),
                policy.min_segment_match,
                True,
                low.name,
            )
        )
    return criteria
