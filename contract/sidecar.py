"""The typed, versioned schema of an artifact's sidecar JSON: the one reader and writer of it.

An artifact is ``NAME.onnx`` (or ``NAME.engine``) plus ``NAME.json``, the sidecar; contract/ARTIFACT.md
documents every field. :class:`Sidecar` parses and validates a sidecar (types, ranges, consistency
between its fields), :meth:`Sidecar.check_against` compares it with the model's real inputs and
outputs as a backend reports them (:class:`IOSignature`), and :meth:`Sidecar.to_json` writes the
same layout back. Export builds a :class:`Sidecar` before it writes one, so it never writes an
artifact the runtime refuses.

Every error is a :class:`~contract.errors.SidecarError`: one line naming the sidecar file and the
field, e.g. ``model.json: input.std[1] must be > 0, got 0``.

Four modules make the contract, one job each: :mod:`contract.json_reader` reads the JSON (hostile
files refused before they cost anything: size, nesting depth, duplicate keys);
:mod:`contract.sidecar_records` holds the limits and one record per section;
:mod:`contract.sidecar_sections` reads each section into its record (NaN in typed fields,
oversized integers, out-of-range values); this module assembles the :class:`Sidecar` and checks its
sections against each other.

Only the standard library: ``runtime``, ``export`` and ``calib`` all import this module.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contract import sidecar_sections as sections

# MAX_DEPTH / MAX_SIDECAR_BYTES: the reader's bounds, part of this module's documented API.
from contract.json_reader import MAX_DEPTH as MAX_DEPTH
from contract.json_reader import MAX_SIDECAR_BYTES as MAX_SIDECAR_BYTES
from contract.json_reader import (
    Dim,
    Reader,
    check_tree,
    parse_json_text,
    read_sidecar_text,
    show,
    type_name,
)
from contract.sidecar_records import (
    FORMAT,
    FORMAT_VERSION,
    HEAD_OUTPUTS,
    MAX_CLASSES,
    MAX_QUERIES,
    PROFILE_OUTPUTS,
    SUPPORTED_FORMAT_VERSIONS,
    ClassSpec,
    ConsumerProfile,
    HasClasses,
    InputSpec,
    IOSignature,
    OutputSpec,
    Provenance,
    Thresholds,
)
from contract.vocabulary import HEADS, PRECISIONS, TASKS

_TOP_KEYS = (
    "format",
    "consumer",
    "format_version",
    "model_file",
    "task",
    "head",
    "precision",
    "input",
    "outputs",
    "num_classes",
    "num_queries",
    "classes",
    "panoptic",
    "onnx",
    "fp16",
    "tensorrt_lint",
    "int8",
    "tools",
    "source",
    "sha256",
    "size_bytes",
    "created_utc",
    "tensorrt",
)


@dataclass(frozen=True)
class Sidecar(HasClasses):
    """A validated sidecar (``format_version`` :data:`FORMAT_VERSION`). Build it with
    :meth:`from_json` / :meth:`from_file`; ``to_json`` writes the documented layout."""

    head: str
    task: str
    precision: str
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    classes: tuple[ClassSpec, ...]
    num_queries: int | None = None
    panoptic: Thresholds = field(default_factory=Thresholds)
    provenance: Provenance = field(default_factory=Provenance)
    format_version: int = FORMAT_VERSION
    consumer: ConsumerProfile | None = None

    # -- derived (num_classes and thing_ids: HasClasses) -----------------------------------------

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def replace(self, **changes: Any) -> Sidecar:
        """A copy with fields replaced, validated again (raises :class:`SidecarError`)."""
        provenance = {k: changes.pop(k) for k in list(changes) if k in sections.PROVENANCE_FIELDS}
        updated = dataclasses.replace(self, **changes)
        if provenance:
            updated = dataclasses.replace(
                updated, provenance=dataclasses.replace(self.provenance, **provenance)
            )
        return Sidecar.from_dict(updated.to_dict(), source="sidecar")

    # -- (de)serialisation -------------------------------------------------------------------------

    @classmethod
    def from_json(
        cls, data: str | bytes | Mapping[str, Any], source: str | os.PathLike[str] = "sidecar"
    ) -> Sidecar:
        """Parse and validate sidecar JSON text (or an already parsed dict).

        ``source`` names the file in error messages. Raises :class:`SidecarError`.
        """
        source = str(source)
        if isinstance(data, (str, bytes)):
            data = parse_json_text(data, source)
        return cls.from_dict(data, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Sidecar:
        """Read, parse and validate a sidecar file (size checked before it is read)."""
        return cls.from_json(read_sidecar_text(path), source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "sidecar") -> Sidecar:
        """Validate a parsed sidecar. Raises :class:`SidecarError` naming ``source`` and the field."""
        r = Reader(str(source))
        if not isinstance(data, dict):
            raise r.fail(None, f"not a pem-deploy sidecar (a JSON object is needed, got {type_name(data)})")
        check_tree(data, r.source)
        if "format" not in data:
            raise r.fail("format", f"is missing: not a {FORMAT} sidecar")
        if data["format"] != FORMAT:
            raise r.fail("format", f"must be {FORMAT!r}, got {show(data['format'])}: not a {FORMAT} sidecar")
        if "format_version" not in data:
            raise r.fail(
                "format_version", f"is missing (sidecars of {FORMAT} carry one; re-export the model)"
            )
        version = data["format_version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise r.fail("format_version", f"must be an integer, got {type_name(version)} {show(version)}")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            reads = ", ".join(map(str, SUPPORTED_FORMAT_VERSIONS))
            raise r.fail(
                "format_version",
                f"{version} is not supported: this pem-deploy reads format_version {reads} "
                "(re-export the model with this version, or upgrade pem-deploy)",
            )
        r.obj(
            data, "", _TOP_KEYS, ("head", "task", "precision", "input", "outputs", "num_classes", "classes")
        )
        head = r.string(data["head"], "head", HEADS)
        task = r.string(data["task"], "task", TASKS)
        precision = r.string(data["precision"], "precision", PRECISIONS)
        inp = sections.read_input(r, data["input"])
        classes = sections.read_classes(r, data["classes"])
        num_classes = r.integer(data["num_classes"], "num_classes", 1, MAX_CLASSES)
        if num_classes != len(classes):
            raise r.fail("num_classes", f"is {num_classes} but classes lists {len(classes)}")
        num_queries = None
        if data.get("num_queries") is not None:
            num_queries = r.integer(data["num_queries"], "num_queries", 1, MAX_QUERIES)
        outputs = sections.read_outputs(r, data["outputs"])
        thresholds = sections.read_thresholds(r, data.get("panoptic"), head)
        provenance = sections.read_provenance(r, data)
        consumer = sections.read_consumer(r, data.get("consumer"), head, inp)
        sidecar = cls(
            head=head,
            task=task,
            precision=precision,
            input=inp,
            outputs=outputs,
            classes=classes,
            num_queries=num_queries,
            panoptic=thresholds,
            provenance=provenance,
            format_version=version,
            consumer=consumer,
        )
        _check_head_outputs(r, sidecar)
        return sidecar

    def to_dict(self) -> dict[str, Any]:
        """The sidecar as JSON-ready data, in the documented layout (contract/ARTIFACT.md)."""
        p = self.provenance
        data: dict[str, Any] = {"format": FORMAT, "format_version": self.format_version}
        if p.model_file is not None:
            data["model_file"] = p.model_file
        data.update(
            {
                "task": self.task,
                "head": self.head,
                "precision": self.precision,
                "input": self.input.to_dict(),
                "outputs": [o.to_dict() for o in self.outputs],
                "num_classes": self.num_classes,
            }
        )
        if self.num_queries is not None:
            data["num_queries"] = self.num_queries
        data["classes"] = [c.to_dict() for c in self.classes]
        data["panoptic"] = self.panoptic.to_dict()
        for key in ("onnx", "fp16", "tensorrt_lint", "int8", "tools", "source"):
            if getattr(p, key) is not None:
                data[key] = copy.deepcopy(getattr(p, key))
        for key in ("sha256", "size_bytes", "created_utc"):
            if getattr(p, key) is not None:
                data[key] = getattr(p, key)
        if p.tensorrt is not None:
            data["tensorrt"] = copy.deepcopy(p.tensorrt)
        if self.consumer is not None:
            data["consumer"] = self.consumer.to_dict()
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text (ending in a newline) that :meth:`from_json` reads back to an equal sidecar."""
        return json.dumps(self.to_dict(), indent=indent) + "\n"

    # -- the model behind it ----------------------------------------------------------------------

    def check_against(self, signature: IOSignature, source: str | os.PathLike[str] = "sidecar") -> None:
        """Refuse a sidecar that does not describe the model's real inputs and outputs.

        Compares names, ranks, static sizes (a static size in the sidecar must equal the model's;
        a dynamic one in the sidecar needs a dynamic one in the model) and dtypes. Raises
        :class:`SidecarError` naming ``source``, the field and ``signature.model``.
        """
        r = Reader(str(source))
        model = signature.model
        names = [t.name for t in signature.inputs]
        if names != [self.input.name]:
            raise r.fail("input.name", f"is {self.input.name!r} but {model} has input(s) {show(names)}")
        sections.compare_tensor(r, "input", self.input.shape, self.input.dtype, signature.inputs[0], model)
        ours = {o.name: (i, o) for i, o in enumerate(self.outputs)}
        theirs = {t.name: t for t in signature.outputs}
        for name, (i, _) in ours.items():
            if name not in theirs:
                raise r.fail(
                    f"outputs[{i}].name",
                    f"is {name!r} but {model} has no such output "
                    f"(its outputs: {', '.join(theirs) or 'none'})",
                )
        for name in theirs:
            if name not in ours:
                raise r.fail("outputs", f"does not list {model}'s output {name!r}")
        for name, (i, out) in ours.items():
            sections.compare_tensor(r, f"outputs[{i}]", out.shape, out.dtype, theirs[name], model)


def _check_head_outputs(r: Reader, sc: Sidecar) -> None:
    """The head's documented outputs (or its consumer profile's) are listed, with their dtypes,
    ranks and consistent sizes."""
    wanted = PROFILE_OUTPUTS[sc.consumer.profile] if sc.consumer is not None else HEAD_OUTPUTS[sc.head]
    needs = f"head {sc.head!r}" if sc.consumer is None else f"consumer {sc.consumer.profile!r}"
    index = {o.name: (i, o) for i, o in enumerate(sc.outputs)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise r.fail("outputs", f"lacks output(s) {', '.join(missing)} that {needs} needs")
    b, _, h, w = sc.input.shape
    sizes: dict[str, Dim | None] = {
        "B": b,
        "H": h,
        "W": w,
        "H/4": h // 4 if isinstance(h, int) else None,
        "W/4": w // 4 if isinstance(w, int) else None,
        "K+1": sc.num_classes + 1,
        "Q": sc.num_queries,
        "1": 1,
    }
    queries: int | None = sc.num_queries
    for name, (dtype, template) in wanted.items():
        i, out = index[name]
        if out.dtype != dtype:
            raise r.fail(f"outputs[{i}].dtype", f"of {name!r} must be {dtype} ({needs}), got {out.dtype}")
        if len(out.shape) != len(template):
            raise r.fail(
                f"outputs[{i}].shape",
                f"of {name!r} must have {len(template)} dimensions {tuple(template)}, "
                f"got {show(list(out.shape))}",
            )
        for axis, (symbol, dim) in enumerate(zip(template, out.shape)):
            expected = sizes[symbol]
            if symbol == "Q" and expected is None and isinstance(dim, int):
                if queries is not None and dim != queries:
                    raise r.fail(
                        f"outputs[{i}].shape[{axis}]", f"is {dim} but other outputs have {queries} queries"
                    )
                queries = dim
                continue
            if isinstance(expected, int) and isinstance(dim, int) and dim != expected:
                what = {"B": "the input batch", "H": "the input height", "W": "the input width",
                        "H/4": "input height / 4", "W/4": "input width / 4", "K+1": "num_classes + 1",
                        "Q": "num_queries", "1": "a size-1 axis"}[symbol]  # fmt: skip
                raise r.fail(f"outputs[{i}].shape[{axis}]", f"of {name!r} is {dim} but {what} is {expected}")


def read_sidecar(path: str | os.PathLike[str]) -> Sidecar:
    """:meth:`Sidecar.from_file` (the one way every package reads a sidecar file)."""
    return Sidecar.from_file(path)
