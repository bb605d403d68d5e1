"""``pem-deploy check``: parity of an exported artifact against the PyTorch model it came from.

The artifact runs through the runtime (its sidecar's preprocessing, its backend); PyTorch runs the
source model with the model's own preprocessing; both on the comparison engine's images, judged by
:func:`runtime.tools.compare.compare_predictions` under the shared policy (as ``verify`` and the demo).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from contract.errors import ArtifactError
from contract.fs import sha256_file
from contract.sidecar import Sidecar
from contract.sidecar_records import IOSignature
from export.errors import ExportError
from export.fp16 import emulate_fp16
from export.parity import open_session, torch_runner
from export.source import ModelSource, load_source, load_source_from_sidecar
from runtime.tools.compare import (
    DEFAULT_SCENES,
    ComparisonReport,
    HeadSpec,
    ParityPolicy,
    artifact_meta,
    compare_predictions,
    comparison_images,
    policy_for,
    predict,
    predict_artifact,
)


@dataclass
class CheckResult:
    """Reports (the graph as shipped, plus the FP16-emulated one for FP16 artifacts) and verdict.

    The verdict is the shipped graph's report; the emulated one is shown for information.
    """

    onnx_path: Path
    spec: Sidecar
    reports: list[ComparisonReport] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return list(self.reports[0].failures) if self.reports else ["nothing was compared"]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def policy(self) -> ParityPolicy | None:
        return self.reports[0].policy if self.reports else None

    def summary(self) -> str:
        """Every report's table; the last line is the shipped graph's PASS / FAIL."""
        lines = []
        for i, report in enumerate(self.reports[1:], 1):
            lines.append(report.table().rsplit("\n", 1)[0] + f"\n(report {i}: information only)")
        if self.reports:
            lines.append(self.reports[0].table())
        return "\n".join(lines)


def check_artifact(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    images: Sequence[str | os.PathLike[str]] = (),
    noise: int = 0,
    scenes: int = DEFAULT_SCENES,
    seed: int = 0,
    emulate: bool | None = None,
    policy: ParityPolicy | None = None,
    source: ModelSource | None = None,
    threads: int = 0,
) -> CheckResult:
    """Compare an artifact with PyTorch on generated street scenes and image files.

    The PyTorch model is rebuilt from the sidecar's ``source`` unless ``preset``/``checkpoint``
    (or a ready ``source``) is given. ``noise`` adds diagnostic noise images (never deciding). For
    FP16 artifacts (``emulate`` default) the FP16-emulated graph is compared as well, for
    information (onnxruntime's CPU provider computes most FP16 ops in FP32, the emulation rounds
    every op's output to FP16 like a GPU would). ``policy``: default the artifact's precision's.

    Raises:
        ExportError: bad file or argument (one line).
        ArtifactError: the sidecar is unreadable or breaks the schema
            (:class:`~contract.errors.SidecarError`, naming the file and the field).
    """
    from runtime.core.artifact import load_artifact, locate
    from runtime.core.preprocess import Preprocessor

    try:
        onnx_path, _ = locate(path, suffixes=(".onnx",))
    except ArtifactError as exc:  # check's own refusals of the path are ExportErrors
        raise ExportError(str(exc)) from None
    artifact = load_artifact(onnx_path, verify_checksum=False)
    sidecar_path, spec = artifact.sidecar_path, artifact.spec
    recorded = spec.provenance.sha256
    if recorded and sha256_file(onnx_path) != recorded:
        raise ExportError(f"{onnx_path}: checksum does not match its sidecar (file changed or corrupt)")
    session = open_session(onnx_path, threads)  # before the slow PyTorch model: a mismatch fails fast
    spec.check_against(IOSignature.from_onnxruntime(session, onnx_path.name), sidecar_path)
    fmt = artifact.input_format
    pictures = comparison_images(fmt.height, fmt.width, scenes=scenes, noise=noise, seed=seed, files=images)
    if source is None:
        if preset is not None or checkpoint is not None:
            size = spec.input.default_size or (None, None)
            source = load_source(preset=preset, checkpoint=checkpoint, height=size[0], width=size[1])
        else:
            source = load_source_from_sidecar(spec, sidecar_path)
    if source.config.num_classes != spec.num_classes:
        raise ExportError(
            f"the PyTorch model has {source.config.num_classes} classes, the artifact {spec.num_classes}"
        )
    head = HeadSpec.from_artifact(artifact)
    reference = predict(
        torch_runner(source.model, spec.head),
        pictures,
        {**artifact_meta(artifact), "model_file": "PyTorch", "backend": "torch", "precision": "fp32"},
    )
    policy = policy or policy_for(spec.precision)
    shipped, _ = predict_artifact(onnx_path, pictures, threads=threads)
    result = CheckResult(onnx_path=onnx_path, spec=spec)
    result.reports.append(compare_predictions(shipped, reference, head, policy))
    if emulate is None:
        emulate = spec.precision == "fp16"
    if emulate and spec.precision == "fp16":
        emulated = open_session(emulate_fp16(onnx.load(str(onnx_path))), threads)
        pre = Preprocessor(fmt)
        input_name = emulated.get_inputs()[0].name
        names = [o.name for o in emulated.get_outputs()]
        got = predict(
            lambda image: dict(zip(names, emulated.run(None, {input_name: pre([image])[0]}))),
            pictures,
            {**artifact_meta(artifact), "model_file": "FP16-emulated", "backend": "onnxruntime"},
        )
        result.reports.append(compare_predictions(got, reference, head, policy))
    return result
