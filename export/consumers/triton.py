"""Triton Inference Server model repository for an artifact.

Models written (``NAME`` = ``--model-name``, default ``pem``):

- ``NAME``: the graph itself. ONNX artifacts: ``platform: "onnxruntime_onnx"`` with the TensorRT
  execution accelerator (precision from the artifact, engine and timing caches on so the engine is
  built once per node), the CUDA provider as fallback. Engine artifacts (``pem-deploy build``):
  ``platform: "tensorrt_plan"``; a plan only loads in the Triton release built on the same TensorRT
  version (the sidecar's ``tensorrt.version`` says which). Outputs are what the head gives: a
  label map for ``semantic`` (no dense scores cross the wire), the in-graph panoptic reduction for
  ``panoptic``. Dynamic batching only where the graph's batch axis is dynamic (``export
  --dynamic``); H x W are fixed in the config either way (Triton batches equal shapes only).
- ``NAME_runtime``: a Python-backend model wrapping the torch-free :class:`runtime.Segmenter`
  (any image size, resize + post-processing + panoptic fusion included): input ``image`` uint8
  H x W x 3 (BGR, as OpenCV decodes; ``input_color`` parameter), outputs ``labels`` H x W: uint8
  when the class ids (and 255 = void) fit a byte, else int32 (:func:`labels_dtype`)
  (+ ``panoptic`` int32 H x W and ``segments`` JSON for panoptic artifacts).
- panoptic artifacts also get ``NAME_fuse`` (Python backend: the runtime's panoptic fusion on the
  graph's outputs) and ``NAME_panoptic``, an ensemble ``NAME`` -> ``NAME_fuse``.

Configs are protobuf text written from plain data (:func:`to_pbtxt`); the tests parse every one
with Triton's own ``ModelConfig`` schema (``tritonclient.grpc.model_config_pb2``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from contract.sidecar import Sidecar

TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "uint16": "TYPE_UINT16",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}
TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
TRT_CACHE_DIR = "/tmp/pem_trt_cache"


@dataclass(frozen=True)
class Enum:
    """A protobuf enum value: written bare (``KIND_GPU``), not quoted."""

    name: str


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def to_pbtxt(message: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of nested dicts: dict -> ``key { }``, list of dicts -> repeated
    messages, list of scalars -> ``key: [a, b]``, ``(key, value)`` map entries as lists of dicts."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            lines.append(to_pbtxt(value, indent + 1))
            lines.append(f"{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"{pad}{key} {{")
                lines.append(to_pbtxt(item, indent + 1))
                lines.append(f"{pad}}}")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _params(values: dict[str, str]) -> list[dict[str, Any]]:
    """Model-config ``parameters`` map entries."""
    return [{"key": k, "value": {"string_value": v}} for k, v in values.items()]


def _dims(shape: tuple, batched: bool) -> list[int]:
    dims = [d if isinstance(d, int) else -1 for d in shape]
    return dims[1:] if batched else dims


def graph_model_config(
    sidecar: Sidecar,
    name: str,
    engine: bool,
    max_batch_size: int,
    instances: int,
    size: tuple[int, int],
) -> dict[str, Any]:
    """``config.pbtxt`` data of the graph model (ONNX Runtime + TensorRT EP, or a TensorRT plan)."""
    inp = sidecar.input
    batched = inp.batch is None and max_batch_size > 0  # only a dynamic batch axis can batch
    height, width = size
    in_shape = (inp.shape[0], 3, height, width)
    sizes = {"height": height, "width": width, "height/4": height // 4, "width/4": width // 4}
    config: dict[str, Any] = {
        "name": name,
        "platform": "tensorrt_plan" if engine else "onnxruntime_onnx",
        "max_batch_size": max_batch_size if batched else 0,
        "default_model_filename": "model.plan" if engine else "model.onnx",
        "input": [
            {"name": inp.name, "data_type": Enum(TRITON_DTYPES[inp.dtype]), "dims": _dims(in_shape, batched)}
        ],
        "output": [
            {
                "name": out.name,
                "data_type": Enum(TRITON_DTYPES[out.dtype]),
                "dims": _dims(
                    tuple(sizes.get(d, d) if isinstance(d, str) else d for d in out.shape), batched
                ),
            }
            for out in sidecar.outputs
        ],
        "instance_group": [{"count": instances, "kind": Enum("KIND_GPU")}],
    }
    if batched:
        preferred = [b for b in (2, 4, 8) if b <= max_batch_size] or [max_batch_size]
        config["dynamic_batching"] = {"preferred_batch_size": preferred, "max_queue_delay_microseconds": 2000}
    if not engine:
        trt = {
            "precision_mode": TRT_PRECISION[sidecar.precision],
            "max_workspace_size_bytes": str(4 << 30),
            "trt_engine_cache_enable": "true",
            "trt_engine_cache_path": f"{TRT_CACHE_DIR}/{name}",
            "trt_timing_cache_enable": "true",
            "trt_timing_cache_path": f"{TRT_CACHE_DIR}/{name}",
        }
        config["optimization"] = {
            "execution_accelerators": {
                "gpu_execution_accelerator": [
                    {"name": "tensorrt", "parameters": [{"key": k, "value": v} for k, v in trt.items()]}
                ]
            }
        }
    warm_dims = _dims(in_shape, batched)
    config["model_warmup"] = [
        {
            "name": "zeros",
            "batch_size": 1,
            "inputs": [
                {
                    "key": inp.name,
                    "value": {
                        "data_type": Enum(TRITON_DTYPES[inp.dtype]),
                        "dims": warm_dims,
                        "zero_data": True,
                    },
                }
            ],
        }
    ]
    return config


def labels_dtype(sidecar: Sidecar) -> str:
    """The label map's wire dtype in the Python-backend models: uint8 (a quarter of int32's bytes)
    when every class id and the void id 255 fit a byte, else int32."""
    return "uint8" if sidecar.num_classes <= 255 else "int32"


def runtime_model_config(sidecar: Sidecar, name: str, artifact_file: str, instances: int) -> dict[str, Any]:
    """``config.pbtxt`` data of the Python-backend model around :class:`runtime.Segmenter`."""
    outputs = [{"name": "labels", "data_type": Enum(TRITON_DTYPES[labels_dtype(sidecar)]), "dims": [-1, -1]}]
    if sidecar.head == "panoptic":
        outputs.append({"name": "panoptic", "data_type": Enum("TYPE_INT32"), "dims": [-1, -1]})
        outputs.append({"name": "segments", "data_type": Enum("TYPE_STRING"), "dims": [1]})
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "image", "data_type": Enum("TYPE_UINT8"), "dims": [-1, -1, 3]}],
        "output": outputs,
        "instance_group": [{"count": instances, "kind": Enum("KIND_CPU")}],
        "parameters": _params(
            {"artifact": artifact_file, "input_color": "BGR", "providers": "", "threads": "0"}
        ),
        # One network-size frame before the model reports ready (session + allocator warm).
        "model_warmup": [
            {
                "name": "frame",
                "batch_size": 1,
                "inputs": [
                    {
                        "key": "image",
                        "value": {
                            "data_type": Enum("TYPE_UINT8"),
                            "dims": [*sidecar.input.size, 3],
                            "zero_data": True,
                        },
                    }
                ],
            }
        ],
    }


def fuse_model_config(
    sidecar: Sidecar, name: str, size: tuple[int, int], instances: int, max_batch_size: int
) -> dict[str, Any]:
    """``config.pbtxt`` data of the Python-backend panoptic fusion step (network-size outputs);
    ``max_batch_size`` 0 (static batch-1 graph) or the graph model's."""
    height, width = size
    q = sidecar.num_queries or -1
    shapes = {
        "scores": [q],
        "classes": [q],
        "owner": [height, width],
        "owner_fg": [height, width],
        "mask_area": [q],
    }
    lead = [] if max_batch_size else [1]
    inputs = [
        {"name": out.name, "data_type": Enum(TRITON_DTYPES[out.dtype]), "dims": [*lead, *shapes[out.name]]}
        for out in sidecar.outputs
    ]
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": inputs,
        "output": _panoptic_outputs(size, lead, labels_dtype(sidecar)),
        "instance_group": [{"count": instances, "kind": Enum("KIND_CPU")}],
        "parameters": _params({"sidecar": "model.json"}),
    }


def _panoptic_outputs(size: tuple[int, int], lead: list[int], dtype: str) -> list[dict[str, Any]]:
    height, width = size
    return [
        {"name": "labels", "data_type": Enum(TRITON_DTYPES[dtype]), "dims": [*lead, height, width]},
        {"name": "panoptic", "data_type": Enum("TYPE_INT32"), "dims": [*lead, height, width]},
        {"name": "segments", "data_type": Enum("TYPE_STRING"), "dims": [1]},
    ]


def ensemble_config(
    sidecar: Sidecar, name: str, graph: str, fuse: str, size: tuple[int, int], max_batch_size: int
) -> dict[str, Any]:
    """``config.pbtxt`` data of the panoptic ensemble: the graph model, then the fusion step."""
    height, width = size
    inp = sidecar.input
    lead = [] if max_batch_size else [1]
    return {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": max_batch_size,
        "input": [
            {"name": inp.name, "data_type": Enum(TRITON_DTYPES[inp.dtype]), "dims": [*lead, 3, height, width]}
        ],
        "output": _panoptic_outputs(size, lead, labels_dtype(sidecar)),
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": graph,
                    "model_version": -1,
                    "input_map": [{"key": inp.name, "value": inp.name}],
                    "output_map": [{"key": o.name, "value": f"pem_{o.name}"} for o in sidecar.outputs],
                },
                {
                    "model_name": fuse,
                    "model_version": -1,
                    "input_map": [{"key": o.name, "value": f"pem_{o.name}"} for o in sidecar.outputs],
                    "output_map": [{"key": k, "value": k} for k in ("labels", "panoptic", "segments")],
                },
            ]
        },
    }
