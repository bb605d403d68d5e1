"""The healthy / damaged artifact corpus that calibrates the parity policy
(tests/export/test_compare_corpus.py).

Healthy: the default model's FP32, FP16 and INT8 (both ``--target`` layouts) artifacts, at the
native 256x512 and at 128x256. Damaged (at the native size, each from a healthy artifact or the
model): weights from another seed, one conv's weights scaled by 5 %, colour order swapped, wrong
mean / std in the sidecar, class order permuted, INT8 scales multiplied, one output NaN and the
last decoder layer dropped. Healthy artifacts already under ``root`` are reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

NATIVE = (256, 512)
OTHER = (128, 256)


@dataclass(frozen=True)
class Entry:
    """One corpus artifact: its name, ONNX path, the FP32 reference of its size, and whether healthy."""

    name: str
    path: Path
    reference: Path
    healthy: bool


def _export(source, out: Path, precision: str) -> Path:
    from export.pipeline import ExportOptions, export_artifact

    if (out / "model.onnx").is_file():  # built by an earlier call on the same root
        return out / "model.onnx"
    return export_artifact(source, ExportOptions(out_dir=out, precision=precision)).onnx_path


def _calibrate(source, out: Path, layout: str, data: str) -> Path:
    from calib.calibrate import CalibrationConfig
    from calib.run import run_calibration

    if (out / "model.onnx").is_file():
        return out / "model.onnx"
    config = CalibrationConfig(data=data, num_images=16, threads=1, progress=False)
    outcome = run_calibration(source, out, config, layout=layout, report=False, progress=None)
    return outcome.export.onnx_path


def _copy(path: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for p in (path, path.with_suffix(".json")):
        shutil.copy2(p, out / p.name)
    return out / path.name


def _edit_sidecar(path: Path, change) -> None:
    sidecar_path = path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    change(sidecar)
    sidecar_path.write_text(json.dumps(sidecar, indent=2))


def _save_model(model: onnx.ModelProto, path: Path) -> None:
    data = model.SerializeToString()
    path.write_bytes(data)

    def stamp(sidecar: dict) -> None:
        sidecar["sha256"] = hashlib.sha256(data).hexdigest()
        if "size_bytes" in sidecar:
            sidecar["size_bytes"] = len(data)

    _edit_sidecar(path, stamp)


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _replace(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, name))
            return
    raise KeyError(name)


def scale_one_conv(path: Path, out: Path, factor: float = 1.05) -> Path:
    """One mid-network conv's weights times ``factor``."""
    target = _copy(path, out)
    model = onnx.load(str(target))
    inits = _initializers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    conv = convs[len(convs) // 2]
    weight = numpy_helper.to_array(inits[conv.input[1]])
    _replace(model, conv.input[1], (weight * factor).astype(weight.dtype))
    _save_model(model, target)
    return target


def permute_classes(path: Path, out: Path, num_classes: int) -> Path:
    """The class head's outputs (the K real classes of pred_logits) in another order."""
    target = _copy(path, out)
    model = onnx.load(str(target))
    perm = np.roll(np.arange(num_classes), 1)
    done = 0
    for t in list(model.graph.initializer):
        array = numpy_helper.to_array(t)
        if array.ndim not in (1, 2) or num_classes + 1 not in array.shape:
            continue
        axis = array.ndim - 1 if array.shape[-1] == num_classes + 1 else 0
        order = np.concatenate([perm, [num_classes]])  # "no object" stays last
        _replace(model, t.name, np.take(array, order, axis=axis))
        done += 1
    assert done, "no class-head initializer of width K+1 found"
    _save_model(model, target)
    return target


def multiply_int8_scales(path: Path, out: Path, factor: float = 4.0) -> Path:
    """Every activation QuantizeLinear / DequantizeLinear scale (scalars) times ``factor``."""
    target = _copy(path, out)
    model = onnx.load(str(target))
    inits = _initializers(model)
    names = {
        n.input[1]
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits
    }
    scaled = 0
    for name in names:
        array = numpy_helper.to_array(inits[name])
        if array.size == 1:
            _replace(model, name, (array * factor).astype(array.dtype))
            scaled += 1
    assert scaled, "no INT8 activation scales found"
    _save_model(model, target)
    return target


def nan_output(path: Path, out: Path, output: str = "scores") -> Path:
    """``output`` multiplied by NaN."""
    target = _copy(path, out)
    model = onnx.load(str(target))
    for node in model.graph.node:
        node.output[:] = [f"{output}_ok" if o == output else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan_c"))
    model.graph.node.append(helper.make_node("Mul", [f"{output}_ok", "nan_c"], [output]))
    _save_model(model, target)
    return target


def swap_colour(path: Path, out: Path) -> Path:
    """The sidecar says BGR where the model wants RGB."""
    target = _copy(path, out)
    _edit_sidecar(
        target, lambda s: s["input"].update(color="BGR" if s["input"].get("color", "RGB") == "RGB" else "RGB")
    )
    return target


def wrong_normalization(path: Path, out: Path) -> Path:
    """The sidecar's mean / std in the 0-1 scale (a classic copy-paste mistake)."""
    target = _copy(path, out)

    def change(s: dict) -> None:
        s["input"]["normalization"]["mean"] = [0.485, 0.456, 0.406]
        s["input"]["normalization"]["std"] = [0.229, 0.224, 0.225]

    _edit_sidecar(target, change)
    return target


def build_corpus(root: Path) -> tuple[list[Entry], object]:
    """Export / calibrate every corpus artifact under ``root``; returns the entries and the
    default model's source at the native size (the PyTorch reference of ``check``)."""
    from export.source import load_source
    from pem.zoo import default_dataset_path, ensure_default_checkpoint

    checkpoint = ensure_default_checkpoint()
    data = str(default_dataset_path())
    entries: list[Entry] = []
    native_source = None
    healthy: dict[tuple[str, tuple[int, int]], Path] = {}
    for size in (NATIVE, OTHER):
        source = load_source(checkpoint=checkpoint, height=size[0], width=size[1])
        if size == NATIVE:
            native_source = source
        tag = f"{size[0]}x{size[1]}"
        base = root / tag
        fp32 = _export(source, base / "fp32", "fp32")
        healthy[("fp32", size)] = fp32
        healthy[("fp16", size)] = _export(source, base / "fp16", "fp16")
        healthy[("int8-tensorrt", size)] = _calibrate(source, base / "int8-tensorrt", "tensorrt", data)
        healthy[("int8-onnxruntime", size)] = _calibrate(
            source, base / "int8-onnxruntime", "onnxruntime", data
        )
        for kind in ("fp32", "fp16", "int8-tensorrt", "int8-onnxruntime"):
            entries.append(Entry(f"{kind} {tag}", healthy[(kind, size)], fp32, True))

    assert native_source is not None
    ref = healthy[("fp32", NATIVE)]
    damaged = root / "damaged"
    shutil.rmtree(damaged, ignore_errors=True)
    num_classes = native_source.config.num_classes

    other = load_source(preset="cityscapes-panoptic-tiny", height=NATIVE[0], width=NATIVE[1], seed=1)
    other.config = native_source.config
    other.model.config = native_source.config
    made = {"weights from another seed (fp16)": _export(other, damaged / "other-seed", "fp16")}
    dropped = copy.deepcopy(native_source)
    dropped.model.sem_seg_head.predictor.num_layers -= 1
    made["last decoder layer dropped (fp16)"] = _export(dropped, damaged / "dropped-layer", "fp16")
    made["one conv scaled by 5% (fp16)"] = scale_one_conv(healthy[("fp16", NATIVE)], damaged / "conv-scaled")
    made["colour order swapped (int8)"] = swap_colour(healthy[("int8-tensorrt", NATIVE)], damaged / "bgr")
    made["wrong mean/std in sidecar (fp16)"] = wrong_normalization(
        healthy[("fp16", NATIVE)], damaged / "norm"
    )
    made["class order permuted (fp16)"] = permute_classes(
        healthy[("fp16", NATIVE)], damaged / "classes", num_classes
    )
    made["INT8 scales x4 (int8)"] = multiply_int8_scales(
        healthy[("int8-tensorrt", NATIVE)], damaged / "scales"
    )
    made["scores output NaN (int8)"] = nan_output(healthy[("int8-onnxruntime", NATIVE)], damaged / "nan")
    entries += [Entry(name, path, ref, False) for name, path in made.items()]
    return entries, native_source
