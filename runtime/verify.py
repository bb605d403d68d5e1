"""``pem-deploy verify``: does this artifact compute what its reference computes? Torch-free.

TensorRT builds can silently miscompile (a public report shows TensorRT 11 strongly typed builds
giving wrong results on a DETR-style graph), so the device checks its own engine: both artifacts
(engine vs ONNX, FP16/INT8 ONNX vs FP32 ONNX, any pair the runtime opens) run on the same images
and every output is compared under the shared parity policy (:mod:`contract.parity_policy`, the
thresholds ``pem-deploy check`` uses): absolute + relative tolerance of float scores, agreement of
labels / ids, one-to-one segment matching for panoptic heads.

A workstation can save the reference outputs (``--save-reference ref.npz``: the images, every
output, the label maps and segments); the device loads them (``--load-reference``) with numpy
only, so no onnxruntime is needed there.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from contract.output import check_file, write_file
from contract.parity_policy import ParityPolicy, policy_for, segment_match, segment_match_rate
from runtime.artifact import artifact_files, load_artifact
from runtime.diff_table import name_width, row
from runtime.errors import ArtifactError, InputError
from runtime.images import read_image
from runtime.scenes import street_scene
from runtime.segmenter import Segmenter, open_backend

REFERENCE_FORMAT = "pem-deploy-reference"
REFERENCE_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


class VerifyError(ArtifactError):
    """The two sides cannot be compared (different heads, sizes, classes; unreadable reference)."""


# ---------------------------------------------------------------------------------------------
# Inputs


def make_images(
    height: int,
    width: int,
    *,
    images: str | os.PathLike[str] | None = None,
    random: int = 1,
    scenes: int = 2,
    seed: int = 0,
    limit: int | None = None,
) -> tuple[list[str], list[np.ndarray]]:
    """(names, BGR images at the model size): files of a folder, or seeded noise + street scenes."""
    names: list[str] = []
    out: list[np.ndarray] = []
    if images is not None:
        folder = Path(images)
        files = (
            sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if folder.is_dir()
            else []
        )
        if not files:
            raise InputError(
                f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder"
            )
        for path in files[:limit]:
            image = read_image(path)  # header, size limit and completeness checked first
            names.append(path.name)
            out.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
        return names, out
    rng = np.random.default_rng(seed)
    for i in range(random):
        names.append(f"random[{i}]")
        out.append(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    for i in range(scenes):
        names.append(f"scene[{i}]")
        out.append(street_scene(height, width, seed + 1000 + i))
    if not out:
        raise InputError("nothing to compare: give --images DIR, --random N or --scenes N")
    return names, out


# ---------------------------------------------------------------------------------------------
# Running one side


@dataclass
class Outputs:
    """What one artifact predicts on a set of images (at the model size)."""

    meta: dict[str, Any]
    names: list[str]
    images: list[np.ndarray]
    outputs: list[dict[str, np.ndarray]]
    labels: list[np.ndarray]
    panoptic: list[np.ndarray] = field(default_factory=list)
    segment_classes: list[dict[int, int]] = field(default_factory=list)

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        inputs: Sequence[str | os.PathLike[str] | None] = (),
    ) -> Path:
        """Write a compressed ``.npz`` (staged and renamed, :mod:`contract.output`; an existing
        file only with ``overwrite``, never one of ``inputs``); :func:`load_reference` reads it."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"images": np.stack(self.images), "labels": np.stack(self.labels)}
        for name in self.outputs[0] if self.outputs else []:
            arrays[f"output/{name}"] = np.stack([o[name] for o in self.outputs])
        if self.panoptic:
            arrays["panoptic"] = np.stack(self.panoptic)
        header = {
            "format": REFERENCE_FORMAT,
            "version": REFERENCE_VERSION,
            "meta": self.meta,
            "names": self.names,
            "segment_classes": [{str(k): v for k, v in s.items()} for s in self.segment_classes],
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return write_file(path, buffer.getvalue(), overwrite=overwrite, inputs=inputs)


def load_reference(path: str | os.PathLike[str]) -> Outputs:
    """Read a reference saved by :meth:`Outputs.save` (numpy only, no pickles)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            if header.get("format") != REFERENCE_FORMAT:
                raise VerifyError(f"{path}: not a pem-deploy reference (format {header.get('format')!r})")
            names = list(header["names"])
            outputs_names = [k.split("/", 1)[1] for k in data.files if k.startswith("output/")]
            stacked = {n: data[f"output/{n}"] for n in outputs_names}
            labels = list(data["labels"])
            panoptic = list(data["panoptic"]) if "panoptic" in data.files else []
            images = list(data["images"])
    except FileNotFoundError:
        raise VerifyError(f"--load-reference {path}: no such file") from None
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise VerifyError(f"{path}: not a readable reference .npz ({type(exc).__name__}: {exc})") from None
    outputs = [{n: stacked[n][i] for n in outputs_names} for i in range(len(names))]
    classes = [{int(k): int(v) for k, v in s.items()} for s in header.get("segment_classes", [])]
    return Outputs(header["meta"], names, images, outputs, labels, panoptic, classes)


def run_artifact(
    path: str | os.PathLike[str],
    names: Sequence[str],
    images: Sequence[np.ndarray],
    providers: list[str] | None = None,
    threads: int = 0,
) -> Outputs:
    """Run an artifact (ONNX or engine, through its runtime backend) on BGR images at its model size."""
    artifact = load_artifact(path)
    backend = open_backend(artifact, providers=providers, threads=threads)
    fmt = artifact.input_format
    meta = {
        "model_file": artifact.model_path.name,
        "sha256": artifact.sidecar.get("sha256"),
        "backend": artifact.backend,
        "head": artifact.head,
        "precision": artifact.precision,
        "input_size": [fmt.height, fmt.width],
        "num_classes": artifact.num_classes,
    }
    out = Outputs(meta, list(names), [], [], [])
    with Segmenter(artifact, backend) as seg:
        for name, image in zip(names, images):
            if image.shape[:2] != (fmt.height, fmt.width):
                raise VerifyError(
                    f"{artifact.model_path}: input size {fmt.height}x{fmt.width} differs from the "
                    f"reference images' {image.shape[0]}x{image.shape[1]}"
                )
            batch, geometries, _ = seg.prepare([image], [name])
            raw = backend.infer({artifact.input_name: batch})
            result = seg.postprocess(raw, 0, geometries[0])
            out.images.append(image)
            out.outputs.append({k: np.asarray(v[0]) for k, v in raw.items() if np.ndim(v) >= 1})
            out.labels.append(result.labels)
            if artifact.head == "panoptic" and result.panoptic is not None:
                out.panoptic.append(result.panoptic)
                out.segment_classes.append({s.id: s.category_id for s in result.segments})
    return out


# ---------------------------------------------------------------------------------------------
# Comparison


@dataclass
class OutputDiff:
    """One output on one image: float error stats, or element agreement for integer outputs."""

    name: str
    dtype: str
    max_abs: float
    scale: float
    agreement: float


@dataclass
class SampleDiff:
    name: str
    outputs: dict[str, OutputDiff]
    label_agreement: float
    segment_match: float | None = None
    segments: tuple[int, int, int] | None = None


@dataclass
class VerifyReport:
    """The verdict of :func:`compare_outputs`."""

    candidate: dict[str, Any]
    reference: dict[str, Any]
    policy: ParityPolicy
    samples: list[SampleDiff]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def table(self) -> str:
        w = name_width((s.name for s in self.samples), 18)
        lines = [
            f"verify: {self.candidate.get('model_file')} ({self.candidate.get('backend')}, "
            f"{self.candidate.get('precision')}) vs {self.reference.get('model_file')} "
            f"({self.reference.get('backend')}, {self.reference.get('precision')})",
            row("image", "output", w, f"{'max abs':>11}{'|ref| max':>11}{'equal':>10}"),
        ]
        for s in self.samples:
            for d in s.outputs.values():
                # Exact equality means something for ids (labels, classes, owners) only; float
                # outputs are judged by the tolerance, so their column stays empty ("-").
                equal = f"{d.agreement:>10.4%}" if np.dtype(d.dtype).kind in "biu" else f"{'-':>10}"
                lines.append(row(s.name, d.name, w, f"{d.max_abs:>11.3g}{d.scale:>11.3g}{equal}"))
            extra = ""
            if s.segment_match is not None and s.segments is not None:
                m, r, g = s.segments
                extra = f"  segments matched {m} of {r} ref / {g} candidate ({s.segment_match:.2%})"
            lines.append(row(s.name, "labels", w, f"agreement {s.label_agreement:.4%}{extra}"))
        lines.append("equal: identical elements of integer outputs (floats: max abs vs the tolerance)")
        if self.failures:
            lines.append("FAIL: " + "; ".join(self.failures))
        else:
            lines.append(f"PASS ({self.policy.precision} policy: {self.policy.describe()})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "candidate": self.candidate,
            "reference": self.reference,
            "policy": self.policy.describe(),
            "samples": [
                {
                    "name": s.name,
                    "label_agreement": s.label_agreement,
                    "segment_match": s.segment_match,
                    "outputs": {n: vars(d) for n, d in s.outputs.items()},
                }
                for s in self.samples
            ],
        }


def _check_comparable(candidate: Outputs, reference: Outputs) -> None:
    for key in ("head", "input_size", "num_classes"):
        if candidate.meta.get(key) != reference.meta.get(key):
            raise VerifyError(
                f"{candidate.meta.get('model_file')}: {key} {candidate.meta.get(key)} differs from the "
                f"reference's {reference.meta.get(key)} ({reference.meta.get('model_file')})"
            )


def compare_outputs(
    candidate: Outputs, reference: Outputs, policy: ParityPolicy | None = None
) -> VerifyReport:
    """Compare two runs on the same images under ``policy`` (default: the candidate's precision's)."""
    _check_comparable(candidate, reference)
    policy = policy or policy_for(str(candidate.meta.get("precision", "fp32")))
    failures: list[str] = []
    samples: list[SampleDiff] = []
    missing = sorted(set(reference.outputs[0]) - set(candidate.outputs[0])) if reference.outputs else []
    if missing:
        failures.append(f"candidate lacks output(s) {', '.join(missing)}")
    worst: dict[str, tuple[float, float]] = {}
    for i, name in enumerate(reference.names):
        diffs: dict[str, OutputDiff] = {}
        for out_name, ref in reference.outputs[i].items():
            if out_name not in candidate.outputs[i]:
                continue
            got = candidate.outputs[i][out_name]
            if got.shape != ref.shape:
                failures.append(
                    f"{name} {out_name}: shape {got.shape} differs from the reference's {ref.shape}"
                )
                continue
            a, b = got.astype(np.float64), ref.astype(np.float64)
            err = np.abs(a - b)
            diff = OutputDiff(
                out_name,
                str(got.dtype),
                float(err.max()) if err.size else 0.0,
                float(np.abs(b).max()) if b.size else 0.0,
                float((got == ref).mean()) if got.size else 1.0,
            )
            diffs[out_name] = diff
            w_abs, w_scale = worst.get(out_name, (0.0, 0.0))
            worst[out_name] = (max(w_abs, diff.max_abs), max(w_scale, diff.scale))
        agreement = float((candidate.labels[i] == reference.labels[i]).mean())
        sample = SampleDiff(name, diffs, agreement)
        if reference.panoptic and candidate.panoptic:
            counts = segment_match(
                reference.panoptic[i],
                reference.segment_classes[i],
                candidate.panoptic[i],
                candidate.segment_classes[i],
            )
            sample.segments = counts
            sample.segment_match = segment_match_rate(*counts)
        samples.append(sample)
    for out_name, (max_abs, scale) in worst.items():
        problem = policy.float_failure(out_name, max_abs, scale)
        if problem:
            failures.append(problem)
    lowest = min(samples, key=lambda s: s.label_agreement)
    if lowest.label_agreement < policy.min_label_agreement:
        failures.append(
            f"label agreement {lowest.label_agreement:.4%} on {lowest.name} "
            f"< {policy.min_label_agreement:.3%}"
        )
    matched = [s for s in samples if s.segment_match is not None]
    if matched:
        low = min(matched, key=lambda s: s.segment_match or 0.0)
        if (low.segment_match or 0.0) < policy.min_segment_match:
            failures.append(
                f"panoptic segment match {low.segment_match:.2%} on {low.name} "
                f"< {policy.min_segment_match:.1%}"
            )
    return VerifyReport(candidate.meta, reference.meta, policy, samples, failures)


def verify(
    candidate: str | os.PathLike[str],
    *,
    against: str | os.PathLike[str] | None = None,
    load_reference_from: str | os.PathLike[str] | None = None,
    save_reference_to: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    random: int = 1,
    scenes: int = 2,
    seed: int = 0,
    limit: int | None = None,
    policy: ParityPolicy | None = None,
    providers: list[str] | None = None,
    threads: int = 0,
    overwrite: bool = False,
) -> VerifyReport:
    """Run ``candidate`` and its reference (an artifact, or saved outputs) and compare them.

    ``save_reference_to`` is refused when it exists (unless ``overwrite``) or is one of the
    run's inputs (:func:`verify_inputs`; whatever the flags), before anything runs.

    Raises:
        VerifyError / ArtifactError / InputError: bad arguments or files (one line).
    """
    if (against is None) == (load_reference_from is None):
        raise VerifyError("give the reference: --against ARTIFACT or --load-reference FILE (one of them)")
    if load_reference_from is not None and (save_reference_to is not None or images is not None):
        raise VerifyError("--load-reference brings its own images: drop --images / --save-reference")
    read = verify_inputs(candidate, against, load_reference_from, images)
    if save_reference_to is not None:
        check_file(save_reference_to, overwrite=overwrite, inputs=read)
    if load_reference_from is not None:
        reference = load_reference(load_reference_from)
    else:
        ref_artifact = load_artifact(against)  # type: ignore[arg-type]
        fmt = ref_artifact.input_format
        names, pictures = make_images(
            fmt.height, fmt.width, images=images, random=random, scenes=scenes, seed=seed, limit=limit
        )
        reference = run_artifact(against, names, pictures, providers, threads)  # type: ignore[arg-type]
        if save_reference_to is not None:
            reference.save(save_reference_to, overwrite=overwrite, inputs=read)
    got = run_artifact(candidate, reference.names, reference.images, providers, threads)
    return compare_outputs(got, reference, policy)


def verify_inputs(
    candidate: str | os.PathLike[str],
    against: str | os.PathLike[str] | None = None,
    load_reference_from: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Every file and folder a :func:`verify` run reads: never written by its outputs."""
    read = [*artifact_files(candidate), *artifact_files(against)]
    return read + [Path(p) for p in (load_reference_from, images) if p is not None]
