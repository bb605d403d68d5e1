"""Reading a deployment artifact: the model file and its sidecar JSON (the contract with export/).

An artifact is ``model.onnx`` (or ``model.engine``) plus ``model.json`` beside it. The sidecar
says which backend runs it, what the input looks like, what the outputs mean, and the classes.
See export/ARTIFACT.md for the full schema.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from runtime.errors import ArtifactError
from runtime.preprocess import InputFormat

Head = Literal["raw", "semantic", "panoptic"]
MODEL_SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt"}


@dataclass(frozen=True)
class ClassInfo:
    """One class: contiguous id, name, RGB colour, thing or stuff."""

    id: int
    name: str
    color: tuple[int, int, int]
    isthing: bool


@dataclass(frozen=True)
class Artifact:
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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def thing_ids(self) -> frozenset[int]:
        return frozenset(c.id for c in self.classes if c.isthing)

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


def _require(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise ArtifactError(f"{path}: sidecar has no {key!r} entry")
    return data[key]


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


def load_artifact(path: str | os.PathLike[str], verify_checksum: bool = True) -> Artifact:
    """Read and validate an artifact's sidecar; optionally check the model file's sha256."""
    model_path, sidecar_path = locate(path)
    try:
        data = json.loads(sidecar_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{sidecar_path}: not a valid JSON sidecar ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{sidecar_path}: sidecar must be a JSON object")
    if data.get("format") != "pem-deploy":
        raise ArtifactError(f"{sidecar_path}: not a pem-deploy sidecar (format={data.get('format')!r})")
    expected = data.get("sha256") or data.get("checksum", {}).get("sha256")
    if verify_checksum and expected and sha256_file(model_path) != expected:
        raise ArtifactError(f"{model_path}: checksum does not match its sidecar (file changed or corrupt)")
    try:
        inp = _require(data, "input", sidecar_path)
        shape = list(_require(inp, "shape", sidecar_path))
        if len(shape) != 4:
            raise ArtifactError(f"{sidecar_path}: input shape must be 4-D (N, 3, H, W), got {shape}")
        if str(inp.get("layout", "NCHW")).upper() != "NCHW":
            raise ArtifactError(f"{sidecar_path}: only NCHW inputs are supported, got {inp.get('layout')!r}")
        height, width = (int(v) if isinstance(v, int) and v > 0 else None for v in shape[2:])
        if height is None or width is None:
            size = inp.get("default_size") or inp.get("size")
            if not size:
                raise ArtifactError(f"{sidecar_path}: dynamic input size needs 'default_size' in the sidecar")
            height, width = int(size[0]), int(size[1])
        norm = inp.get("normalization") or {}
        fmt = InputFormat(
            height=height,
            width=width,
            color=str(inp.get("color", "RGB")).upper(),  # type: ignore[arg-type]
            dtype=str(inp.get("dtype", "float32")),  # type: ignore[arg-type]
            normalize_in_graph=bool(inp.get("normalize_in_graph", norm.get("in_graph", False))),
            mean=tuple(norm.get("mean", inp.get("mean", (123.675, 116.28, 103.53)))),  # type: ignore[arg-type]
            std=tuple(norm.get("std", inp.get("std", (58.395, 57.12, 57.375)))),  # type: ignore[arg-type]
        )
        classes = tuple(
            ClassInfo(
                int(c["id"]), str(c["name"]), tuple(int(v) for v in c["color"]), bool(c.get("isthing", False))
            )
            for c in _require(data, "classes", sidecar_path)
        )
        outputs = data.get("outputs", [])
        output_names = (
            tuple(o["name"] if isinstance(o, dict) else str(o) for o in outputs)
            if isinstance(outputs, list)
            else tuple(outputs)
        )
        thresholds = data.get("panoptic") or data.get("thresholds") or {}
        head = str(_require(data, "head", sidecar_path))
        if head not in ("raw", "semantic", "panoptic"):
            raise ArtifactError(f"{sidecar_path}: unknown head {head!r}")
        batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        return Artifact(
            model_path=model_path,
            sidecar_path=sidecar_path,
            backend=MODEL_SUFFIXES[model_path.suffix],  # type: ignore[arg-type]
            head=head,  # type: ignore[arg-type]
            task=str(data.get("task", head)),
            precision=str(data.get("precision", "fp32")),
            input_name=str(inp.get("name", "images")),
            input_format=fmt,
            batch=batch,
            output_names=output_names,
            classes=classes,
            object_mask_threshold=float(thresholds.get("object_mask_threshold", 0.8)),
            overlap_threshold=float(thresholds.get("overlap_threshold", 0.8)),
            sidecar=data,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{sidecar_path}: malformed sidecar ({type(exc).__name__}: {exc})") from None
