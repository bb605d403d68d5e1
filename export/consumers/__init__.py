"""Consumer bundles: one exported artifact, packaged for DeepStream, Triton or Isaac ROS.

:func:`package_artifact` is the one implementation behind ``pem-deploy package ARTIFACT --for
CONSUMER --out DIR`` and ``pem-deploy export ... --for CONSUMER`` (which exports first, then calls
it on the fresh artifact). It never re-exports: where a consumer's stock decoder needs another I/O
contract, the exported ONNX graph's ends are edited (:mod:`export.consumers.graph_edit`) and the
sidecar says so through its typed schema (``consumer`` section, :class:`contract.sidecar.Sidecar`).
The model files stay raw (no header in the engine / ONNX: metadata lives in the sidecar).

- ``triton``: a model repository (semantic, panoptic and raw artifacts; ONNX or engines).
- ``deepstream`` / ``isaac-ros``: semantic artifacts only (ONNX). Both consumers' segmentation
  paths carry one class map per frame (nvinfer's ``NvDsInferSegmentationMeta`` class map; the
  Isaac ROS decoder's mono8 mask): a panoptic result (segment ids + per-segment classes, scores)
  has no slot in either, so a panoptic artifact is refused with a pointer to ``--head semantic``
  or to ``--for triton``.

The bundle is written through :func:`contract.output.staged_folder`: staged, and installed only
when complete; nothing the tool did not write is replaced (``--exist-ok`` / ``--overwrite``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from contract.output import staged_folder
from contract.sidecar import Sidecar
from contract.sidecar_records import ConsumerProfile, InputSpec, OutputSpec
from export.consumers import deepstream, isaac_ros, triton
from export.consumers.graph_edit import fix_input_size, labels_as, normalize_in_graph, rename_input
from export.errors import ExportError
from export.metadata import METADATA_PREFIX, embed_metadata, validated_sidecar
from runtime.core.artifact import Artifact, load_artifact

if TYPE_CHECKING:  # the pipeline imports torch; packaging an artifact does not need it
    from export.pipeline import ExportOptions, ExportResult

CONSUMERS = ("triton", "deepstream", "isaac-ros")
SEMANTIC_ONLY = (
    "{consumer} takes one class map per frame, which a panoptic result (segment ids, per-segment "
    "classes and scores) does not fit: export with --head semantic, or package for triton"
)


class PackageError(ExportError):
    """A bundle cannot be made from this artifact with these options (one line, names the file)."""


@dataclass(frozen=True)
class PackageOptions:
    """What ``pem-deploy package`` can be told.

    ``model_name``: Triton model name (and prefix of the helper models). ``max_batch_size``:
    Triton dynamic batching limit (used only when the graph's batch axis is dynamic).
    ``instances``: Triton instance-group count per model.
    """

    consumer: str
    model_name: str = "pem"
    max_batch_size: int = 4
    instances: int = 1

    def validate(self) -> None:
        if self.consumer not in CONSUMERS:
            raise PackageError(f"--for {self.consumer}: choose one of {', '.join(CONSUMERS)}")
        if not self.model_name.replace("_", "").replace("-", "").isalnum():
            raise PackageError(f"--model-name {self.model_name!r}: use letters, digits, '_' and '-'")
        if not 1 <= self.max_batch_size <= 1024:
            raise PackageError(f"--max-batch-size {self.max_batch_size}: must be 1..1024")
        if not 1 <= self.instances <= 64:
            raise PackageError(f"--instances {self.instances}: must be 1..64")


@dataclass
class Bundle:
    """A written bundle: its folder, its files (relative), and what was checked while writing it."""

    consumer: str
    root: Path
    files: list[str]
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"bundle       {self.root}  ({self.consumer}, {len(self.files)} files)"]
        lines += [f"  {name}" for name in self.files]
        lines += [f"checked      {c}" for c in self.checks]
        lines += [f"note         {n}" for n in self.notes]
        return "\n".join(lines)


Progress = Callable[[str], None]


def package_artifact(
    artifact_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: PackageOptions,
    progress: Progress | None = None,
    *,
    exist_ok: bool = False,
    overwrite: bool = False,
) -> Bundle:
    """Package the artifact at ``artifact_path`` (model file, sidecar or folder) for
    ``options.consumer`` into the folder ``out_dir``, by the rules of :mod:`contract.output`: never
    onto the artifact itself, a folder holding files pem-deploy did not write only with
    ``exist_ok`` (the bundle is added beside them), a foreign file at one of the bundle's names
    only with ``overwrite``. Raises :class:`PackageError` / :class:`~contract.errors.ArtifactError`
    / :class:`~contract.errors.OutputError` naming the file at fault."""
    options.validate()
    say = progress or (lambda message: None)
    say(f"reading {artifact_path}")
    artifact = load_artifact(artifact_path)
    if artifact.spec.consumer is not None:
        raise PackageError(
            f"{artifact.sidecar_path}: already packaged for {artifact.spec.consumer.profile}; "
            "package the exported artifact instead"
        )
    inputs = [artifact_path, artifact.model_path, artifact.sidecar_path]
    with staged_folder(
        out_dir,
        exist_ok=exist_ok,
        overwrite=overwrite,
        inputs=inputs,
        names=_NAMES[options.consumer],
    ) as out:
        try:
            bundle = _WRITERS[options.consumer](artifact, out.staging, options, say)
        except (ValueError, onnx.checker.ValidationError) as exc:  # a graph the edits cannot take
            raise PackageError(f"{artifact.model_path}: {exc}") from None
        out.register_tree()
        say(f"moving the bundle into {out_dir}")
    bundle.root = Path(out_dir)
    return bundle


def package_export(result: ExportResult, export: ExportOptions, options: PackageOptions) -> Bundle:
    """Package what an export just wrote (``pem-deploy export --for``) into
    ``OUT/NAME-CONSUMER``, with the export's ``exist_ok`` / ``overwrite``: Triton serves the engine
    as a tensorrt_plan when one was built; DeepStream and Isaac ROS edit the ONNX graph."""
    engine = result.engine_path if options.consumer == "triton" else None
    return package_artifact(
        engine or result.onnx_path,
        Path(export.out_dir) / f"{export.name}-{options.consumer}",
        options,
        exist_ok=export.exist_ok,
        overwrite=export.overwrite,
    )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _onnx_of(artifact: Artifact, consumer: str) -> onnx.ModelProto:
    if artifact.backend != "onnxruntime":
        raise PackageError(
            f"{artifact.model_path}: {consumer} packages edit the ONNX graph's bindings; give the "
            "exported .onnx (the consumer builds its own TensorRT engine from it)"
        )
    return onnx.load(str(artifact.model_path))


def _write_edited(
    model: onnx.ModelProto,
    edited: Sidecar,
    artifact: Artifact,
    folder: Path,
    profile: str,
    edits: list[str],
) -> Sidecar:
    """Write ``model.onnx`` + ``model.json`` for an edited graph (``edited``: the artifact's sidecar
    with the consumer's input and outputs), the sidecar validated against it."""
    spec = artifact.spec
    consumer = ConsumerProfile(profile, artifact.model_path.name, spec.provenance.sha256, tuple(edits))
    provenance = dataclasses.replace(edited.provenance, model_file="model.onnx")
    edited = dataclasses.replace(edited, consumer=consumer, provenance=provenance)
    kept = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if provenance.onnx is not None:
        embed_metadata(model, edited)  # the embedded contract describes the edited graph
    onnx.checker.check_model(model)
    blob = model.SerializeToString()
    (folder / "model.onnx").write_bytes(blob)
    provenance = dataclasses.replace(
        provenance, sha256=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob)
    )
    packaged = validated_sidecar(dataclasses.replace(edited, provenance=provenance), model, "model.json")
    (folder / "model.json").write_text(packaged.to_json())
    return packaged


def _semantic_graph(artifact: Artifact, consumer: str) -> tuple[onnx.ModelProto, Sidecar]:
    spec = artifact.spec
    if spec.head != "semantic":
        what = "a panoptic" if spec.head == "panoptic" else "a raw-head"
        raise PackageError(
            f"{artifact.model_path}: {what} artifact; " + SEMANTIC_ONLY.format(consumer=consumer)
        )
    return _onnx_of(artifact, consumer), spec


def _static_size(model: onnx.ModelProto, spec: Sidecar, edits: list[str]) -> tuple[int, int]:
    height, width = spec.input.size
    edit = fix_input_size(model, spec.input.name, height, width)
    if edit:
        edits.append(edit)
    return height, width


def _edited_input(inp: InputSpec, name: str, height: int, width: int, in_graph: bool) -> InputSpec:
    """The consumer's float32 input at a static ``height`` x ``width`` (the batch axis kept),
    normalised in the graph or not."""
    batch = inp.shape[0]
    dynamic = isinstance(batch, str)
    return dataclasses.replace(
        inp,
        name=name,
        dtype="float32",
        normalize_in_graph=in_graph,
        shape=(batch, 3, height, width),
        dynamic=dynamic,
        default_size=inp.default_size if dynamic else None,
    )


def _write_deepstream(artifact: Artifact, stage: Path, options: PackageOptions, say: Progress) -> Bundle:
    model, spec = _semantic_graph(artifact, "DeepStream")
    say("editing the graph: normalisation in, INT32 argmax_1 H x W x 1 out")
    edits: list[str] = []
    height, width = _static_size(model, spec, edits)
    for edit in (normalize_in_graph(model, spec.input), labels_as(model, deepstream.OUTPUT_NAME, axis=3)):
        if edit:
            edits.append(edit)
    inp = _edited_input(spec.input, spec.input.name, height, width, in_graph=True)
    labels = OutputSpec(
        deepstream.OUTPUT_NAME,
        "int32",
        (inp.shape[0], height, width, 1),
        meaning="class id per pixel at network size, H x W x 1 (NvDsInferParseCustomPeopleSemSegNet)",
    )
    edited = dataclasses.replace(spec, input=inp, outputs=(labels,))
    packaged = _write_edited(model, edited, artifact, stage, "deepstream", edits)
    props = deepstream.nvinfer_config(packaged, "model.onnx")
    comment = (
        "nvinfer config for a PEM semantic model packaged by pem-deploy (DeepStream 9.x, TensorRT 10.x).\n"
        "Normalisation is in the graph (net-scale-factor=1, offsets=0): feed RGB 0..255.\n"
        "Keys: NVIDIA/DeepStream gstnvinfer_property_parser.h;\n"
        "parser: nvdsinfer_customsegmentationparser.cpp."
    )
    config_text = deepstream.render_config(props, comment)
    deepstream.check_config(config_text)
    deepstream.check_parser_contract(props, {o.name: (o.dtype, o.shape) for o in packaged.outputs})
    (stage / deepstream.CONFIG_FILE).write_text(config_text)
    (stage / deepstream.LABELS_FILE).write_text(deepstream.labels_text(packaged))
    (stage / deepstream.APP_CONFIG_FILE).write_text(
        deepstream.deepstream_app_config(deepstream.CONFIG_FILE, height, width)
    )
    script = stage / deepstream.GST_SCRIPT
    script.write_text(
        "#!/bin/sh\n# Segment a H.264 MP4 with DeepStream: run_gst_launch.sh IN.mp4 [OUT.mp4]\n"
        'cd "$(dirname "$0")" || exit 1\n'
        + deepstream.gst_launch_line(deepstream.CONFIG_FILE, height, width)
        + "\n"
    )
    script.chmod(0o755)
    (stage / "README.md").write_text(_readme("deepstream", packaged, height, width))
    return Bundle(
        "deepstream",
        stage,
        _files(stage),
        checks=[
            f"{deepstream.CONFIG_FILE}: every key in nvinfer's key table "
            "(gstnvinfer_property_parser.h), typed",
            f"model.onnx: {deepstream.OUTPUT_NAME} int32 {height}x{width}x1 = the stock parser's contract",
            "model.json: the sidecar schema, checked against the edited graph's inputs and outputs",
        ],
        notes=[f"graph edit: {e}" for e in edits],
    )


def _write_isaac_ros(artifact: Artifact, stage: Path, options: PackageOptions, say: Progress) -> Bundle:
    model, spec = _semantic_graph(artifact, "Isaac ROS")
    if spec.num_classes > isaac_ros.MAX_MASK_CLASSES:
        raise PackageError(
            f"{artifact.model_path}: {spec.num_classes} classes do not fit Isaac ROS's mono8 mask"
        )
    say("editing the graph: input 'input' NCHW float, output 'output' int32 N x 1 x H x W")
    edits: list[str] = []
    height, width = _static_size(model, spec, edits)
    # The Isaac ROS encoder normalises (x/255 - mean/255) / (std/255): the graph takes that input.
    undo = None
    if spec.input.normalize_in_graph or spec.input.dtype != "float32":
        undo = _strip_to_normalized(model, spec)
        edits.append(undo)
    for edit in (
        rename_input(model, spec.input.name, isaac_ros.INPUT_NAME),
        labels_as(model, isaac_ros.OUTPUT_NAME, axis=1),
    ):
        if edit:
            edits.append(edit)
    inp = _edited_input(spec.input, isaac_ros.INPUT_NAME, height, width, in_graph=False)
    labels = OutputSpec(
        isaac_ros.OUTPUT_NAME,
        "int32",
        (inp.shape[0], 1, height, width),
        meaning="class id per pixel at network size, N x 1 x H x W (Isaac ROS decoder: argmax, NCHW)",
    )
    edited = dataclasses.replace(spec, input=inp, outputs=(labels,))
    packaged = _write_edited(model, edited, artifact, stage, "isaac-ros", edits)
    isaac_ros.check_bindings(
        {packaged.input.name: (packaged.input.dtype, packaged.input.shape)},
        {o.name: (o.dtype, o.shape) for o in packaged.outputs},
        packaged.num_classes,
    )
    model_paths = ("/workspaces/models/pem/model.onnx", "/workspaces/models/pem/model.plan")
    params = isaac_ros.parameters(packaged, *model_paths)
    launch = isaac_ros.launch_arguments(packaged, *model_paths)
    comment = (
        "ROS 2 parameters (--params-file) for a PEM semantic model packaged by pem-deploy, per node of\n"
        "isaac_ros_segformer_core.launch.py. Copy model.onnx to model_file_path (or edit the paths)."
    )
    (stage / isaac_ros.PARAMS_FILE).write_text(isaac_ros.render_yaml(params, comment))
    script = stage / isaac_ros.LAUNCH_SCRIPT
    script.write_text(
        "#!/bin/sh\n# Isaac ROS SegFormer graph with this model (same values as the params file)\n"
        + isaac_ros.launch_command(launch)
        + "\n"
    )
    script.chmod(0o755)
    (stage / "README.md").write_text(_readme("isaac-ros", packaged, height, width, launch=launch))
    return Bundle(
        "isaac-ros",
        stage,
        _files(stage),
        checks=[
            "model.onnx: input 'input' float32 N x 3 x H x W, output 'output' int32 N x 1 x H x W "
            "(UNetDecoderNode argmax, NCHW)",
            "model.json: the sidecar schema, checked against the edited graph's inputs and outputs",
        ],
        notes=[f"graph edit: {e}" for e in edits],
    )


def _strip_to_normalized(model: onnx.ModelProto, spec: Sidecar) -> str:
    """A graph that normalises its own 0..255 input, given normalised values instead: a node
    ``y * std + mean`` in front of it (rounded to uint8 for a uint8 graph)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from export.consumers.graph_edit import _fresh, _graph_input, _rewire_inputs

    value = _graph_input(model, spec.input.name)
    inner = _fresh(model, f"{spec.input.name}_pem_pixels")
    _rewire_inputs(model, spec.input.name, inner)
    value.type.tensor_type.elem_type = TensorProto.FLOAT
    std = numpy_helper.from_array(
        np.asarray(spec.input.std, np.float32).reshape(1, 3, 1, 1), _fresh(model, "pem_std")
    )
    mean = numpy_helper.from_array(
        np.asarray(spec.input.mean, np.float32).reshape(1, 3, 1, 1), _fresh(model, "pem_mean")
    )
    model.graph.initializer.extend([std, mean])
    scaled = _fresh(model, "pem_scaled")
    pixels = _fresh(model, "pem_pixels_f") if spec.input.dtype != "float32" else inner
    nodes = [
        helper.make_node("Mul", [spec.input.name, std.name], [scaled], name=scaled),
        helper.make_node("Add", [scaled, mean.name], [pixels], name=pixels),
    ]
    if spec.input.dtype == "uint8":
        rounded = _fresh(model, "pem_rounded")
        clipped = _fresh(model, "pem_clipped")
        lo, hi = _fresh(model, "pem_lo"), _fresh(model, "pem_hi")
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(0, np.float32), lo),
                numpy_helper.from_array(np.array(255, np.float32), hi),
            ]
        )
        nodes += [
            helper.make_node("Round", [pixels], [rounded], name=rounded),
            helper.make_node("Clip", [rounded, lo, hi], [clipped], name=clipped),
            helper.make_node("Cast", [clipped], [inner], to=TensorProto.UINT8, name=inner),
        ]
    elif spec.input.dtype == "float16":
        nodes.append(helper.make_node("Cast", [pixels], [inner], to=TensorProto.FLOAT16, name=inner))
    for i, node in enumerate(nodes):
        model.graph.node.insert(i, node)
    return "input: takes (x - mean) / std (the Isaac ROS encoder's output); y * std + mean restores 0..255"


def _write_triton(artifact: Artifact, stage: Path, options: PackageOptions, say: Progress) -> Bundle:
    spec = artifact.spec
    name = options.model_name
    engine = artifact.backend == "tensorrt"
    size = spec.input.size
    repo = stage / "model_repository"
    configs: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    say("writing the model repository")
    graph_dir = repo / name / "1"
    graph_dir.mkdir(parents=True)
    shutil.copyfile(artifact.model_path, graph_dir / ("model.plan" if engine else "model.onnx"))
    configs[name] = triton.graph_model_config(
        spec, name, engine, options.max_batch_size, options.instances, size
    )
    batching = configs[name]["max_batch_size"]
    if not batching:
        notes.append(
            f"{name}: static batch {spec.input.batch} graph, so no dynamic batching "
            "(export --dynamic for a batch axis Triton can fill)"
        )
    if engine:
        version = (spec.provenance.tensorrt or {}).get("version", "unknown")
        notes.append(
            f"{name}: a TensorRT {version} plan loads only in the Triton release built on TensorRT {version}"
        )
    runtime_name = f"{name}_runtime"
    runtime_dir = repo / runtime_name / "1"
    (runtime_dir / "artifact").mkdir(parents=True)
    shutil.copyfile(artifact.model_path, runtime_dir / "artifact" / artifact.model_path.name)
    shutil.copyfile(artifact.sidecar_path, runtime_dir / "artifact" / artifact.sidecar_path.name)
    _copy_model_py("runtime_model.py", runtime_dir)
    configs[runtime_name] = triton.runtime_model_config(
        spec, runtime_name, f"artifact/{artifact.model_path.name}", options.instances
    )
    if spec.head == "panoptic":
        fuse, ensemble = f"{name}_fuse", f"{name}_panoptic"
        fuse_dir = repo / fuse / "1"
        fuse_dir.mkdir(parents=True)
        (fuse_dir / "model.json").write_text(spec.to_json())
        _copy_model_py("fuse_model.py", fuse_dir)
        configs[fuse] = triton.fuse_model_config(spec, fuse, size, options.instances, batching)
        (repo / ensemble / "1").mkdir(parents=True)
        configs[ensemble] = triton.ensemble_config(spec, ensemble, name, fuse, size, batching)
    for model_name, config in configs.items():
        (repo / model_name / "config.pbtxt").write_text(triton.to_pbtxt(config) + "\n")
    (stage / "README.md").write_text(_readme("triton", spec, *size, models=list(configs), engine=engine))
    return Bundle(
        "triton",
        stage,
        _files(stage),
        checks=[
            f"{len(configs)} config.pbtxt written from typed data (the tests parse them with Triton's schema)"
        ],
        notes=notes,
    )


def _copy_model_py(source: str, folder: Path) -> None:
    text = resources.files("export.consumers.triton_models").joinpath(source).read_text()
    (folder / "model.py").write_text(text)


_WRITERS: dict[str, Callable[[Artifact, Path, PackageOptions, Progress], Bundle]] = {
    "triton": _write_triton,
    "deepstream": _write_deepstream,
    "isaac-ros": _write_isaac_ros,
}

# The bundle's top-level files, known before any work: checked at entry against the artifact (a
# bundle written into the artifact's own folder would replace it) and against foreign files.
_NAMES: dict[str, tuple[str, ...]] = {
    "triton": ("README.md",),
    "deepstream": (
        "model.onnx",
        "model.json",
        deepstream.CONFIG_FILE,
        deepstream.LABELS_FILE,
        deepstream.APP_CONFIG_FILE,
        deepstream.GST_SCRIPT,
        "README.md",
    ),
    "isaac-ros": ("model.onnx", "model.json", isaac_ros.PARAMS_FILE, isaac_ros.LAUNCH_SCRIPT, "README.md"),
}


def _readme(consumer: str, spec: Sidecar, height: int, width: int, **extra: Any) -> str:
    from export.consumers.readme import bundle_readme

    return bundle_readme(consumer, spec, height, width, **extra)
