"""``pem-deploy verify``: does this artifact compute what its reference computes? Torch-free.

TensorRT builds can silently miscompile (a public report shows TensorRT 11 strongly typed builds
giving wrong results on a DETR-style graph), so the device checks its own engine: both artifacts
(engine vs ONNX, FP16/INT8 ONNX vs FP32 ONNX, any pair the runtime opens) run on the same images
and are judged by the one comparison engine (:mod:`runtime.tools.compare`), under the policy ``check``
uses.

A workstation can save the reference outputs (``--save-reference ref.npz``: the images and every
output); the device loads them (``--load-reference``, validated before use) with numpy only, so no
onnxruntime is needed there for the reference.
"""

from __future__ import annotations

import os
from pathlib import Path

from contract.output import check_file
from runtime.core.artifact import artifact_files, load_artifact
from runtime.tools.compare import (
    DEFAULT_SCENES,
    ComparisonError,
    ComparisonReport,
    ParityPolicy,
    compare_predictions,
    comparison_images,
    load_reference,
    predict_artifact,
    save_reference,
)

VerifyError = ComparisonError
"""Kept name: the two sides cannot be compared, or a reference file is malformed."""


def verify(
    candidate: str | os.PathLike[str],
    *,
    against: str | os.PathLike[str] | None = None,
    load_reference_from: str | os.PathLike[str] | None = None,
    save_reference_to: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    noise: int = 0,
    scenes: int = DEFAULT_SCENES,
    seed: int = 0,
    limit: int | None = None,
    policy: ParityPolicy | None = None,
    providers: list[str] | None = None,
    threads: int = 0,
    overwrite: bool = False,
) -> ComparisonReport:
    """Run ``candidate`` and its reference (an artifact, or saved outputs) and compare them.

    Default images: ``scenes`` seeded street scenes (plus the files of ``images`` when given);
    ``noise`` adds diagnostic noise images that never decide the verdict.
    ``save_reference_to`` is refused when it exists (unless ``overwrite``) or is one of the run's
    inputs (:func:`verify_inputs`; whatever the flags), before anything runs.

    Raises:
        ComparisonError / ArtifactError / InputError: bad arguments or files (one line).
    """
    if (against is None) == (load_reference_from is None):
        raise ComparisonError("give the reference: --against ARTIFACT or --load-reference FILE (one of them)")
    if load_reference_from is not None and (save_reference_to is not None or images is not None):
        raise ComparisonError("--load-reference brings its own images: drop --images / --save-reference")
    read = verify_inputs(candidate, against, load_reference_from, images)
    if save_reference_to is not None:
        check_file(save_reference_to, overwrite=overwrite, inputs=read)
    if load_reference_from is not None:
        reference = load_reference(load_reference_from)
        load_artifact(candidate)  # a broken candidate is reported before the comparison starts
    else:
        fmt = load_artifact(against).input_format  # type: ignore[arg-type]
        pictures = comparison_images(
            fmt.height, fmt.width, scenes=scenes, noise=noise, seed=seed, images=images, limit=limit
        )
        reference, _ = predict_artifact(against, pictures, providers, threads)  # type: ignore[arg-type]
    got, spec = predict_artifact(candidate, reference.comparison_images(), providers, threads)
    report = compare_predictions(got, reference, spec, policy)
    if save_reference_to is not None:
        save_reference(reference, save_reference_to, overwrite=overwrite, inputs=read)
    return report


def verify_inputs(
    candidate: str | os.PathLike[str],
    against: str | os.PathLike[str] | None = None,
    load_reference_from: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Every file and folder a :func:`verify` run reads: never written by its outputs."""
    read = [*artifact_files(candidate), *artifact_files(against)]
    return read + [Path(p) for p in (load_reference_from, images) if p is not None]
