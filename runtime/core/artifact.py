"""Reading a deployment artifact: the model file and its sidecar JSON (the contract with export/).

An artifact is ``model.onnx`` (or ``model.engine``) plus ``model.json`` beside it. The sidecar
says which backend runs it, what the input looks like, what the outputs mean, and the classes.
The schema is :class:`contract.sidecar.Sidecar` (export/ARTIFACT.md documents it); this module
adapts it to what the runtime needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from contract.sidecar import ClassSpec, HasClasses, Sidecar
from runtime.core.preprocess import InputFormat
from runtime.errors import ArtifactError

Head = Literal["raw", "semantic", "panoptic"]
MODEL_SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt"}


# One class: contiguous id, name, RGB colour, thing or stuff (the sidecar's own record).
ClassInfo = ClassSpec


@dataclass(frozen=True)
class Artifact(HasClasses):
    """Everything the runtime needs to know about a model file."""

    model_path: Path
    sidecar_path: Path
    backend: Literal["onnxruntime", "tensorrt"]
    head: Head
    task: str
    precision: str
    input_name: str
    input_format: InputFormat
    batch: int | None
    output_names: tuple[str, ...]
    classes: tuple[ClassInfo, ...]
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    sidecar: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    spec: Sidecar | None = field(default=None, repr=False, compare=False)

    @property
    def palette(self) -> np.ndarray:
        """(K, 3) uint8 RGB colours."""
        return np.asarray([c.color for c in self.classes], dtype=np.uint8).reshape(-1, 3)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def locate(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(model file, sidecar) from either of them, or from a directory holding one model."""
    path = Path(path)
    if path.is_dir():
        models = sorted(
            p for p in path.iterdir() if p.suffix in MODEL_SUFFIXES and p.with_suffix(".json").is_file()
        )
        if len(models) != 1:
            found = ", ".join(p.name for p in models) or "none"
            raise ArtifactError(
                f"{path}: expected exactly one model with a sidecar .json in the folder, found {found}"
            )
        path = models[0]
    if path.suffix == ".json":
        candidates = [path.with_suffix(s) for s in MODEL_SUFFIXES if path.with_suffix(s).is_file()]
        if not candidates:
            raise ArtifactError(f"{path}: no model file ({', '.join(MODEL_SUFFIXES)}) beside this sidecar")
        return candidates[0], path
    if not path.is_file():
        raise ArtifactError(f"{path}: no such model file")
    if path.suffix not in MODEL_SUFFIXES:
        raise ArtifactError(
            f"{path}: unknown model type {path.suffix!r} (expected {', '.join(MODEL_SUFFIXES)})"
        )
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


def load_artifact(path: str | os.PathLike[str], verify_checksum: bool = True) -> Artifact:
    """Read and validate an artifact's sidecar (:class:`contract.sidecar.Sidecar`, the one schema);
    optionally check the model file's sha256.

    The sidecar is checked against the model's real inputs and outputs when a backend opens it
    (:class:`runtime.Segmenter`). Raises :class:`ArtifactError` (schema errors:
    :class:`~contract.errors.SidecarError`, naming the file and the field).
    """
    model_path, sidecar_path = locate(path)
    spec = Sidecar.from_file(sidecar_path)
    if model_path.stat().st_size == 0:
        raise ArtifactError(f"{model_path}: the model file is empty")
    expected = spec.provenance.sha256
    if verify_checksum and expected and sha256_file(model_path) != expected:
        raise ArtifactError(f"{model_path}: checksum does not match its sidecar (file changed or corrupt)")
    inp = spec.input
    height, width = inp.size
    fmt = InputFormat(
        height=height,
        width=width,
        color=inp.color,  # type: ignore[arg-type]
        dtype=inp.dtype,  # type: ignore[arg-type]
        normalize_in_graph=inp.normalize_in_graph,
        mean=inp.mean,
        std=inp.std,
    )
    return Artifact(
        model_path=model_path,
        sidecar_path=sidecar_path,
        backend=MODEL_SUFFIXES[model_path.suffix],  # type: ignore[arg-type]
        head=spec.head,  # type: ignore[arg-type]
        task=spec.task,
        precision=spec.precision,
        input_name=inp.name,
        input_format=fmt,
        batch=inp.batch,
        output_names=spec.output_names,
        classes=spec.classes,
        object_mask_threshold=spec.panoptic.object_mask_threshold,
        overlap_threshold=spec.panoptic.overlap_threshold,
        sidecar=spec.to_dict(),
        spec=spec,
    )


def with_input_size(artifact: Artifact, size: tuple[int, int]) -> Artifact:
    """``artifact`` run at ``size`` (height, width) instead of its default size.

    Only a dynamic export takes another size: each dynamic side a positive multiple of the
    sidecar's ``size_multiple``, a static side its exported value, and for a TensorRT engine
    within the first optimisation profile's min / max (the sidecar's ``tensorrt.profiles``).
    Raises :class:`ArtifactError` naming the sidecar and the allowed range.
    """
    h, w = (int(v) for v in size)
    inp = artifact.sidecar.get("input", {})
    shape = list(inp.get("shape", []))
    multiple = int(inp.get("size_multiple", 1) or 1)
    where = f"{artifact.sidecar_path}"
    for axis, side, value in ((2, "height", h), (3, "width", w)):
        exported = shape[axis] if len(shape) == 4 else None
        if isinstance(exported, int):
            if value != exported:
                raise ArtifactError(
                    f"{where}: input {side} is fixed to {exported} in this export, got {value} "
                    "(export with --dynamic to choose the size at run time)"
                )
        elif value < multiple or value % multiple:
            raise ArtifactError(f"{where}: input {side} {value} must be a positive multiple of {multiple}")
    profiles = (artifact.sidecar.get("tensorrt") or {}).get("profiles") or []
    if artifact.backend == "tensorrt" and profiles:
        low, high = profiles[0].get("min"), profiles[0].get("max")
        if low and high and not (low[-2] <= h <= high[-2] and low[-1] <= w <= high[-1]):
            raise ArtifactError(
                f"{where}: input size {h}x{w} is outside the engine's profile "
                f"{low[-2]}x{low[-1]} .. {high[-2]}x{high[-1]} (rebuild with --min/--max)"
            )
    fmt = dataclasses.replace(artifact.input_format, height=h, width=w)
    return dataclasses.replace(artifact, input_format=fmt)
