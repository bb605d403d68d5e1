"""The artifact contract: the sidecar JSON, the ONNX ``metadata_props``, checksums, atomic writes.

An artifact is ``<name>.onnx`` + ``<name>.json`` in one folder; contract/ARTIFACT.md documents every
field. The sidecar is self-describing (input, outputs, classes, thresholds, provenance) and
carries the sha256 of the ONNX file. The same contract minus that checksum (a file cannot hold its
own hash) is embedded in the ONNX ``metadata_props`` under ``pem.sidecar``.
"""

from __future__ import annotations

import colorsys
import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from contract.errors import SidecarError
from contract.json_reader import Dim
from contract.output import FolderOutput, check_folder
from contract.sidecar import Sidecar
from contract.sidecar_records import (
    FORMAT,
    FORMAT_VERSION,
    ClassSpec,
    InputSpec,
    IOSignature,
    OutputSpec,
    Provenance,
    TensorSignature,
    Thresholds,
)
from export.errors import ExportError
from export.heads import HEAD_OUTPUTS, INPUT_NAME
from pem.config import PEMConfig
from pem.datasets_meta import CITYSCAPES_CLASSES

METADATA_PREFIX = "pem."

_TOOLS = ("torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "onnxsim", "numpy", "pem-deploy")


def tool_versions() -> dict[str, str]:
    """Versions of the tools that shaped the artifact (installed ones only) and Python."""
    versions = {"python": platform.python_version()}
    for name in _TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _fallback_color(class_id: int) -> tuple[int, int, int]:
    """Deterministic, well-spread colour for classes without an official palette entry."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95 - 0.25 * ((class_id // 7) % 2))
    return (round(r * 255), round(g * 255), round(b * 255))


def class_table(config: PEMConfig) -> tuple[ClassSpec, ...]:
    """The classes (id, name, RGB colour, thing or stuff); Cityscapes names get the official colours."""
    palette = dict(CITYSCAPES_CLASSES)
    things = set(config.thing_ids)
    table = []
    for k in range(config.num_classes):
        name = config.class_names[k] if config.class_names else f"class_{k}"
        color = palette.get(name, _fallback_color(k))
        table.append(ClassSpec(k, name, tuple(color), k in things))  # type: ignore[arg-type]
    return tuple(table)


@dataclass(frozen=True)
class GraphInterface:
    """What an export decided about its graph's interface: the model config, the head, the
    numeric precision, how the input is taken (``preprocess``) and its batch / dynamic sizes."""

    config: PEMConfig
    head: str
    precision: str
    preprocess: str = "none"
    batch: int = 1
    dynamic: bool = False

    def input_spec(self) -> InputSpec:
        """The graph input the sidecar describes."""
        config = self.config
        h, w = config.input_size
        in_graph = self.preprocess != "none"
        shape: tuple[Dim, Dim, Dim, Dim] = (
            ("batch", 3, "height", "width") if self.dynamic else (self.batch, 3, h, w)
        )
        return InputSpec(
            name=INPUT_NAME,
            shape=shape,
            dtype="uint8" if self.preprocess == "uint8" else "float32",
            mean=tuple(config.pixel_mean),  # type: ignore[arg-type]
            std=tuple(config.pixel_std),  # type: ignore[arg-type]
            normalize_in_graph=in_graph,
            default_size=(h, w),
            size_multiple=32,
            dynamic=self.dynamic,
        )

    def output_specs(self) -> tuple[OutputSpec, ...]:
        """The head's outputs with their sizes filled in (symbols where the export is dynamic)."""
        h, w = self.config.input_size
        k = self.config.num_classes
        sizes: dict[str, Dim] = (
            {"B": "batch", "H": "height", "W": "width", "H/4": "height/4", "W/4": "width/4"}
            if self.dynamic
            else {"B": self.batch, "H": h, "W": w, "H/4": h // 4, "W/4": w // 4}
        )
        sizes.update({"Q": self.config.transformer_decoder.num_queries, "K+1": k + 1, "K": k})
        return tuple(
            OutputSpec(
                spec.name,
                spec.dtype,
                tuple(sizes.get(entry, entry) for entry in spec.shape),  # type: ignore[misc]
                tuple(str(entry) for entry in spec.shape),
                spec.meaning,
            )
            for spec in HEAD_OUTPUTS[self.head]
        )


def build_sidecar(interface: GraphInterface, provenance: Provenance) -> Sidecar:
    """The sidecar of an exported graph (``provenance``: the build records, without ``sha256`` /
    ``created_utc``, which :func:`write_artifact` adds). Validated when it is written."""
    config = interface.config
    return Sidecar(
        head=interface.head,
        task=config.task,
        precision=interface.precision,
        input=interface.input_spec(),
        outputs=interface.output_specs(),
        classes=class_table(config),
        num_queries=config.transformer_decoder.num_queries,
        panoptic=Thresholds(
            object_mask_threshold=float(config.inference.object_mask_threshold),
            overlap_threshold=float(config.inference.overlap_threshold),
            object_mask_threshold_in_graph=interface.head == "panoptic",
        ),
        provenance=dataclasses.replace(provenance, tools=provenance.tools or tool_versions()),
    )


def embed_metadata(model: onnx.ModelProto, sidecar: Sidecar) -> None:
    """Write the contract into ``model.metadata_props`` (replacing earlier ``pem.*`` entries)."""
    data = sidecar.to_dict()
    contract = {k: v for k, v in data.items() if k not in ("sha256", "created_utc", "tensorrt_lint")}
    entries = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "task": sidecar.task,
        "head": sidecar.head,
        "precision": sidecar.precision,
        "opset": str(sidecar.provenance.graph.opset),
        "input": json.dumps(sidecar.input.to_dict(), sort_keys=True),
        "classes": json.dumps([c.to_dict() for c in sidecar.classes]),
        "sidecar": json.dumps(contract, sort_keys=True),
    }
    kept = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=METADATA_PREFIX + key, value=value)
    model.producer_name = FORMAT
    model.producer_version = tool_versions().get("pem-deploy", "")
    model.doc_string = (
        f"PEM {sidecar.task} model, head {sidecar.head}, {sidecar.precision}; "
        f"contract in metadata_props['pem.sidecar'] and the sidecar JSON"
    )


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """The contract embedded by :func:`embed_metadata` (``{}`` if none), validated by the schema."""
    props = {p.key: p.value for p in model.metadata_props}
    raw = props.get(METADATA_PREFIX + "sidecar")
    if not raw:
        return {}
    return Sidecar.from_json(raw, source="metadata_props['pem.sidecar']").to_dict()


def onnx_signature(model: onnx.ModelProto, name: str = "the model") -> IOSignature:
    """The inputs and outputs an ONNX graph declares (what onnxruntime will report for it)."""
    initializers = {init.name for init in model.graph.initializer}

    def one(value: onnx.ValueInfoProto) -> TensorSignature:
        tensor = value.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        except (KeyError, ValueError, TypeError):
            dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        if not tensor.HasField("shape"):
            return TensorSignature(value.name, None, dtype)
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim
        )
        return TensorSignature(value.name, dims, dtype)

    inputs = tuple(one(v) for v in model.graph.input if v.name not in initializers)
    return IOSignature(inputs, tuple(one(v) for v in model.graph.output), name)


def validated_sidecar(sidecar: Sidecar, model: onnx.ModelProto, name: str) -> Sidecar:
    """``sidecar`` through the schema and checked against ``model``'s declared inputs and outputs:
    what export is about to write must be exactly what the runtime accepts (else ExportError)."""
    try:
        spec = Sidecar.from_dict(sidecar.to_dict(), source=name)
        spec.check_against(onnx_signature(model, name.rsplit(".", 1)[0] + ".onnx"), name)
    except SidecarError as exc:
        raise ExportError(f"refusing to write an artifact the runtime would refuse: {exc}") from None
    return spec


class ArtifactWriter:
    """Stages an artifact's files and moves them into ``out_dir`` only on :meth:`commit`, by the
    rules of :mod:`contract.output` (the one output mechanism; this class keeps export's API).

    ``out_dir`` may hold other files only with ``exist_ok`` (ours are added beside them); a file
    at one of ``names`` that pem-deploy did not write is replaced only with ``overwrite`` (our
    own, from an earlier export, is replaced); ``inputs`` (the checkpoint and its config) are
    never written. A failed export (any exception before ``commit``) leaves ``out_dir`` exactly
    as it was: not even created when it did not exist. Use as a context manager.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        names: tuple[str, ...] = (),
        exist_ok: bool = False,
        overwrite: bool = False,
        inputs: tuple[str | os.PathLike[str], ...] = (),
    ):
        self.out_dir = Path(out_dir)
        self.names = names
        self._output = FolderOutput(
            self.out_dir, exist_ok=exist_ok, overwrite=overwrite, inputs=inputs, names=names
        )
        self._open = False

    def check(self) -> None:
        """Raise :class:`contract.errors.OutputError` now (before the slow part) when ``out_dir``
        would be refused: a file, an input, foreign files or names, not writable."""
        check_folder(
            self.out_dir,
            exist_ok=self._output.exist_ok,
            overwrite=self._output.overwrite,
            inputs=self._output.inputs,
            names=self.names,
        )

    def __enter__(self) -> ArtifactWriter:
        self._output.open()
        self._open = True
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        # Nothing is installed here: only an explicit commit() installs (a failed export, even
        # one that raises nothing inside the block, must not half-replace an artifact).
        if self._open:
            self._open = False
            converted = self._output.close(exc)
            if converted is not exc:
                raise converted from None

    @property
    def staging_dir(self) -> Path:
        """A scratch folder (for work files; only :meth:`stage_path` files are committed)."""
        if not self._open:
            raise RuntimeError("ArtifactWriter used outside its context")
        return self._output.scratch

    def stage_path(self, name: str) -> Path:
        """Path in the staging folder for the file ``name`` (registered for :meth:`commit`)."""
        if not self._open:
            raise RuntimeError("ArtifactWriter used outside its context")
        return self._output.path(name)

    def commit(self) -> list[Path]:
        """Move the staged files into ``out_dir`` (in staging order); returns their final paths."""
        if not self._open:
            raise RuntimeError("ArtifactWriter used outside its context")
        return self._output.commit()


def write_artifact(writer: ArtifactWriter, model: onnx.ModelProto, sidecar: Sidecar, name: str) -> Sidecar:
    """Stage ``<name>.onnx`` and ``<name>.json`` (with the ONNX file's sha256) in ``writer``.

    The sidecar is staged last, so it is also moved last: a sidecar always describes the ONNX file
    beside it (and its checksum says so). Returns the sidecar as written.
    """
    onnx_path = writer.stage_path(f"{name}.onnx")
    data = model.SerializeToString()
    onnx_path.write_bytes(data)
    provenance = dataclasses.replace(
        sidecar.provenance,
        model_file=f"{name}.onnx",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        created_utc=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    )
    # Validated with the runtime's schema before anything is moved into place (commit).
    spec = validated_sidecar(dataclasses.replace(sidecar, provenance=provenance), model, f"{name}.json")
    json_path = writer.stage_path(f"{name}.json")
    json_path.write_text(spec.to_json())
    return spec
