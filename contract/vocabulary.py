"""The names an artifact and its tools agree on, each defined once (every package imports them).

Each is a ``Literal`` type for annotations and the tuple of its values (same order) for checks,
choices and messages.
"""

from __future__ import annotations

from typing import Literal, get_args

#: What the exported graph returns: raw logits and masks, a semantic label map, panoptic fusion.
Head = Literal["raw", "semantic", "panoptic"]
#: What the model was trained for.
Task = Literal["semantic", "panoptic"]
#: The numeric precision of a graph or engine.
Precision = Literal["fp32", "fp16", "int8"]
#: How the exported graph takes its input: normalised floats, 0..255 floats, or uint8 bytes.
Preprocess = Literal["none", "normalize", "uint8"]
#: How the deformable convolutions are exported: one custom op, or standard ONNX ops.
DeformImpl = Literal["native", "decomposed"]
#: The runtime an INT8 graph's Q/DQ layout is for (``--target``; each target has its layout).
Int8Target = Literal["tensorrt", "onnxruntime"]
#: The runtime that runs a model file.
Backend = Literal["onnxruntime", "tensorrt"]

HEADS: tuple[str, ...] = get_args(Head)
TASKS: tuple[str, ...] = get_args(Task)
PRECISIONS: tuple[str, ...] = get_args(Precision)
PREPROCESS_MODES: tuple[str, ...] = get_args(Preprocess)
DEFORM_IMPLS: tuple[str, ...] = get_args(DeformImpl)
INT8_TARGETS: tuple[str, ...] = get_args(Int8Target)
#: Model file suffix -> the backend that runs it.
MODEL_SUFFIXES: dict[str, str] = {
    ".onnx": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".trt": "tensorrt",
}
#: Checkpoint files: ours (config beside it) and the official PEM release's.
OUR_CHECKPOINT_SUFFIXES: tuple[str, ...] = (".safetensors",)
OFFICIAL_CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pkl", ".pth", ".pt")
