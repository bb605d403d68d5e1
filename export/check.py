"""``pem-deploy check``: parity of an exported artifact against the PyTorch model it came from."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from contract.parity_policy import POLICIES, ParityPolicy, Tolerance, policy_for
from contract.sidecar import IOSignature
from export.errors import ExportError
from export.fp16 import emulate_fp16
from export.heads import ExportedModel
from export.metadata import read_sidecar, sha256_file
from export.parity import ParityReport, compare, is_index_output, make_samples, open_session
from export.source import ModelSource, load_source, load_source_from_sidecar

# Default pass thresholds per precision: the shared parity policy (also verify's and demo's).
DEFAULT_MIN_AGREEMENT = {name: policy.min_label_agreement for name, policy in POLICIES.items()}


@dataclass
class CheckResult:
    """Reports (the graph as shipped, plus the FP16-emulated one for FP16 artifacts) and verdict."""

    onnx_path: Path
    sidecar: dict[str, Any]
    reports: list[ParityReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """Every report's table and worst case, then PASS or FAIL with the thresholds."""
        lines = []
        for report in self.reports:
            lines.append(report.table())
            diffs = [report.worst(n) for n in report.output_names]
            floats = ", ".join(f"{d.name} {d.max_abs:.3g}" for d in diffs if not is_index_output(d))
            indices = ", ".join(f"{d.name} {d.agreement:.4%}" for d in diffs if is_index_output(d))
            parts = ([f"max abs {floats}"] if floats else []) + ([f"equal {indices}"] if indices else [])
            lines.append(
                "worst: "
                + "; ".join([*parts, f"label agreement {report.label_agreement:.5%}"])
                + f", mIoU {report.miou:.5f}"
            )
        rtol = self.thresholds.get("rtol", {})
        present = set(self.reports[0].output_names) if self.reports else set()
        limits = ", ".join(
            f"{k} <= {v:g}" + (f" + {rtol[k]:g}|ref|" if rtol.get(k) else "")
            for k, v in self.thresholds.get("max_abs", {}).items()
            if k in present  # a labels-only model has no scores to hold to a tolerance
        )
        rule = f"label agreement >= {self.thresholds.get('min_label_agreement', 0):.3%}"
        rule = f"max abs {limits}; {rule}" if limits else rule
        if self.failures:
            lines.append(f"FAIL ({self.reports[0].graph}): " + "; ".join(self.failures))
        else:
            lines.append(f"PASS ({self.reports[0].graph}: {rule})")
        return "\n".join(lines)


def locate_artifact(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(ONNX file, sidecar) from the ONNX file, the sidecar or a folder holding exactly one pair."""
    path = Path(path)
    if path.is_dir():
        pairs = sorted(p for p in path.glob("*.onnx") if p.with_suffix(".json").is_file())
        if len(pairs) != 1:
            found = ", ".join(p.name for p in pairs) or "none"
            raise ExportError(f"{path}: expected one .onnx with its .json in the folder, found {found}")
        path = pairs[0]
    if path.suffix == ".json":
        path = path.with_suffix(".onnx")
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise ExportError(f"{path}: its sidecar {sidecar.name} is missing")
    return path, sidecar


def check_artifact(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    images: Sequence[str | os.PathLike[str]] = (),
    random: int = 2,
    scenes: int = 1,
    seed: int = 0,
    emulate: bool | None = None,
    max_abs: dict[str, float] | None = None,
    min_agreement: float | None = None,
    source: ModelSource | None = None,
    threads: int = 0,
) -> CheckResult:
    """Compare an artifact with PyTorch on random images, synthetic scenes and image files.

    The PyTorch model is rebuilt from the sidecar's ``source`` unless ``preset``/``checkpoint``
    (or a ready ``source``) is given. For FP16 artifacts (``emulate`` default) the FP16-emulated
    graph is compared as well (onnxruntime's CPU provider computes most FP16 ops in FP32, the
    emulation rounds every op's output to FP16 like a GPU would); thresholds apply to the graph
    as shipped.

    The sidecar is read with the one schema (:class:`contract.sidecar.Sidecar`) and checked
    against the ONNX file's real inputs and outputs before the PyTorch model is built.

    Raises:
        ExportError: bad file or argument (one line).
        ArtifactError: the sidecar is unreadable or breaks the schema
            (:class:`~contract.errors.SidecarError`, naming the file and the field).
    """
    onnx_path, sidecar_path = locate_artifact(path)
    spec = read_sidecar(sidecar_path)
    recorded = spec.provenance.sha256
    if recorded and sha256_file(onnx_path) != recorded:
        raise ExportError(f"{onnx_path}: checksum does not match its sidecar (file changed or corrupt)")
    session = open_session(onnx_path, threads)  # before the slow PyTorch model: a mismatch fails fast
    spec.check_against(IOSignature.from_onnxruntime(session, onnx_path.name), sidecar_path)
    sidecar = spec.to_dict()
    preprocess = "none"
    if spec.input.normalize_in_graph:
        preprocess = "uint8" if spec.input.dtype == "uint8" else "normalize"
    if source is None:
        if preset is not None or checkpoint is not None:
            size = spec.input.default_size or (None, None)
            source = load_source(preset=preset, checkpoint=checkpoint, height=size[0], width=size[1])
        else:
            source = load_source_from_sidecar(sidecar, sidecar_path)
    if source.config.num_classes != spec.num_classes:
        raise ExportError(
            f"the PyTorch model has {source.config.num_classes} classes, the artifact {spec.num_classes}"
        )
    reference = ExportedModel(source.model, spec.head, preprocess).eval()
    samples = make_samples(sidecar["input"], random=random, scenes=scenes, images=images, seed=seed)
    if not samples:
        raise ExportError("nothing to compare: give --random N, --scenes N or --image FILE")
    kwargs: dict[str, Any] = {
        "head": spec.head,
        "num_classes": spec.num_classes,
        "thing_ids": tuple(sorted(spec.thing_ids)),
        "object_mask_threshold": spec.panoptic.object_mask_threshold,
        "overlap_threshold": spec.panoptic.overlap_threshold,
    }
    result = CheckResult(onnx_path=onnx_path, sidecar=sidecar)
    report = compare(session, reference, samples, graph_label=f"onnxruntime {spec.precision}", **kwargs)
    result.reports.append(report)
    if emulate is None:
        emulate = spec.precision == "fp16"
    if emulate and spec.precision == "fp16":
        emulated = open_session(emulate_fp16(onnx.load(str(onnx_path))), threads)
        result.reports.append(compare(emulated, reference, samples, graph_label="FP16-emulated", **kwargs))
    policy = policy_for(spec.precision)
    if max_abs is not None:  # an explicit --max-abs is an absolute limit only
        policy = ParityPolicy(
            policy.precision, {n: Tolerance(v) for n, v in max_abs.items()}, policy.min_label_agreement
        )
    policy = policy.with_overrides(min_label_agreement=min_agreement)
    result.thresholds = {
        "max_abs": {n: t.atol for n, t in policy.tolerances.items()},
        "rtol": {n: t.rtol for n, t in policy.tolerances.items()},
        "min_label_agreement": policy.min_label_agreement,
    }
    result.failures = report.failures(policy)
    return result
