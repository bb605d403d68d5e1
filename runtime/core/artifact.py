"""Reading a deployment artifact: the model file and its sidecar JSON (the contract with export/).

An artifact is ``model.onnx`` (or ``model.engine``) plus ``model.json`` beside it. The sidecar
says which backend runs it, what the input looks like, what the outputs mean, and the classes.
The schema is :class:`contract.sidecar.Sidecar` (contract/ARTIFACT.md documents it); an
:class:`Artifact` is the two paths and that typed sidecar, with the views the runtime needs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from contract.fs import sha256_file
from contract.sidecar import Sidecar, read_sidecar
from contract.sidecar_records import ClassSpec, HasClasses
from contract.vocabulary import MODEL_SUFFIXES, Backend, Head
from runtime.core.preprocess import InputFormat
from runtime.errors import ArtifactError

__all__ = [
    "MODEL_SUFFIXES",
    "Artifact",
    "ClassInfo",
    "Head",
    "artifact_files",
    "load_artifact",
    "locate",
    "with_input_size",
]

# One class: contiguous id, name, RGB colour, thing or stuff (the sidecar's own record).
ClassInfo = ClassSpec


@dataclass(frozen=True)
class Artifact(HasClasses):
    """A model file, its sidecar and the validated sidecar (``spec``, the one view of it).

    ``run_size``: the (height, width) it runs at when :func:`with_input_size` chose one other than
    the sidecar's own.
    """

    model_path: Path
    sidecar_path: Path
    spec: Sidecar
    run_size: tuple[int, int] | None = None

    @property
    def backend(self) -> Backend:
        """The runtime that runs the model file (from its suffix)."""
        return cast(Backend, MODEL_SUFFIXES[self.model_path.suffix])

    @property
    def head(self) -> Head:
        """What the graph returns (raw, semantic or panoptic outputs)."""
        return cast(Head, self.spec.head)

    @property
    def task(self) -> str:
        """What the model was trained for (semantic or panoptic)."""
        return self.spec.task

    @property
    def precision(self) -> str:
        """The graph's numeric precision (fp32, fp16, int8)."""
        return self.spec.precision

    @property
    def input_name(self) -> str:
        """The name of the graph input."""
        return self.spec.input.name

    @property
    def batch(self) -> int | None:
        """Static batch size, ``None`` when dynamic."""
        return self.spec.input.batch

    @property
    def output_names(self) -> tuple[str, ...]:
        """The graph outputs, in order."""
        return self.spec.output_names

    @property
    def classes(self) -> tuple[ClassSpec, ...]:  # type: ignore[override]
        """The classes: contiguous ids from 0, names, colours, thing or stuff."""
        return self.spec.classes

    @property
    def object_mask_threshold(self) -> float:
        """Panoptic fusion: the least score of a kept query."""
        return self.spec.panoptic.object_mask_threshold

    @property
    def overlap_threshold(self) -> float:
        """Panoptic fusion: the least visible fraction of a kept mask."""
        return self.spec.panoptic.overlap_threshold

    @property
    def input_format(self) -> InputFormat:
        """How images become the model input: size (``run_size`` or the sidecar's), colour, dtype
        and normalisation."""
        inp = self.spec.input
        height, width = self.run_size or inp.size
        return InputFormat(
            height=height,
            width=width,
            color=inp.color,  # type: ignore[arg-type]
            dtype=inp.dtype,  # type: ignore[arg-type]
            normalize_in_graph=inp.normalize_in_graph,
            mean=inp.mean,
            std=inp.std,
        )

    @property
    def palette(self) -> np.ndarray:
        """(K, 3) uint8 RGB colours."""
        return np.asarray([c.color for c in self.classes], dtype=np.uint8).reshape(-1, 3)


def locate(path: str | os.PathLike[str], suffixes: Iterable[str] = MODEL_SUFFIXES) -> tuple[Path, Path]:
    """(model file, sidecar) from either of them, or from a directory holding one model.

    ``suffixes``: the model files accepted (default every one a backend runs; ``pem-deploy check``
    takes ``(".onnx",)``). Raises :class:`ArtifactError` naming the path.
    """
    suffixes = tuple(suffixes)
    kind = "ONNX file" if suffixes == (".onnx",) else "model file"
    path = Path(path)
    if path.is_dir():
        models = sorted(
            p for p in path.iterdir() if p.suffix in suffixes and p.with_suffix(".json").is_file()
        )
        if len(models) != 1:
            found = ", ".join(p.name for p in models) or "none"
            what = "model" if kind == "model file" else ".onnx"
            raise ArtifactError(
                f"{path}: expected exactly one {what} with a sidecar .json in the folder, found {found}"
            )
        path = models[0]
    if path.suffix == ".json":
        candidates = [path.with_suffix(s) for s in suffixes if path.with_suffix(s).is_file()]
        if not candidates:
            raise ArtifactError(f"{path}: no {kind} ({', '.join(suffixes)}) beside this sidecar")
        return candidates[0], path
    if not path.is_file():
        raise ArtifactError(f"{path}: no such {kind}")
    if path.suffix not in suffixes:
        raise ArtifactError(f"{path}: unknown model type {path.suffix!r} (expected {', '.join(suffixes)})")
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise ArtifactError(f"{path}: its sidecar {sidecar.name} is missing (export writes both)")
    return path, sidecar


def artifact_files(path: str | os.PathLike[str] | None) -> list[Path]:
    """The files an artifact is read from (model and sidecar; the path itself when it cannot be
    located): inputs that no output of the same run may replace (contract/output.py)."""
    if path is None:
        return []
    try:
        return list(locate(path))
    except ArtifactError:
        return [] if Path(path).is_dir() else [Path(path)]


def load_artifact(
    path: str | os.PathLike[str],
    verify_checksum: bool = True,
    suffixes: Iterable[str] = MODEL_SUFFIXES,
) -> Artifact:
    """Read and validate an artifact's sidecar (:class:`contract.sidecar.Sidecar`, the one schema);
    optionally check the model file's sha256.

    The sidecar is checked against the model's real inputs and outputs when a backend opens it
    (:class:`runtime.Segmenter`). ``suffixes``: as :func:`locate`. Raises :class:`ArtifactError`
    (schema errors: :class:`~contract.errors.SidecarError`, naming the file and the field).
    """
    model_path, sidecar_path = locate(path, suffixes)
    spec = read_sidecar(sidecar_path)
    if model_path.stat().st_size == 0:
        raise ArtifactError(f"{model_path}: the model file is empty")
    expected = spec.provenance.sha256
    if verify_checksum and expected and sha256_file(model_path) != expected:
        raise ArtifactError(f"{model_path}: checksum does not match its sidecar (file changed or corrupt)")
    return Artifact(model_path=model_path, sidecar_path=sidecar_path, spec=spec)


def with_input_size(artifact: Artifact, size: tuple[int, int]) -> Artifact:
    """``artifact`` run at ``size`` (height, width) instead of its default size.

    Only a dynamic export takes another size: each dynamic side a positive multiple of the
    sidecar's ``size_multiple``, a static side its exported value, and for a TensorRT engine
    within the first optimisation profile's min / max (the sidecar's ``tensorrt.profiles``).
    Raises :class:`ArtifactError` naming the sidecar and the allowed range.
    """
    h, w = (int(v) for v in size)
    inp = artifact.spec.input
    multiple = inp.size_multiple
    where = f"{artifact.sidecar_path}"
    for axis, side, value in ((2, "height", h), (3, "width", w)):
        exported = inp.shape[axis]
        if isinstance(exported, int):
            if value != exported:
                raise ArtifactError(
                    f"{where}: input {side} is fixed to {exported} in this export, got {value} "
                    "(export with --dynamic to choose the size at run time)"
                )
        elif value < multiple or value % multiple:
            raise ArtifactError(f"{where}: input {side} {value} must be a positive multiple of {multiple}")
    engine = artifact.spec.provenance.engine
    if artifact.backend == "tensorrt" and engine is not None and engine.profiles:
        low, high = engine.profiles[0].min, engine.profiles[0].max
        if low and high and not (low[-2] <= h <= high[-2] and low[-1] <= w <= high[-1]):
            raise ArtifactError(
                f"{where}: input size {h}x{w} is outside the engine's profile "
                f"{low[-2]}x{low[-1]} .. {high[-2]}x{high[-1]} (rebuild with --min/--max)"
            )
    return dataclasses.replace(artifact, run_size=(h, w))
