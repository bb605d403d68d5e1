"""Isaac ROS (isaac_ros_image_segmentation): bindings and parameters for the SegFormer / U-Net graph.

Contract, read in NVIDIA-ISAAC-ROS/isaac_ros_image_segmentation:

- ``isaac_ros_segformer/launch/isaac_ros_segformer_core.launch.py``: the inference node binds
  input ``input`` (``input_binding_names``) to the DNN image encoder's tensor and output
  ``output`` (``output_binding_names``); the decoder is ``UNetDecoderNode`` with
  ``network_output_type`` (softmax | sigmoid | argmax, default argmax) and ``data_format: NCHW``;
  the encoder normalises ``(x / 255 - image_mean) / image_stddev`` into an NCHW float tensor.
- ``isaac_ros_gxf_extensions/gxf_isaac_ros_unet/gxf/image_segmentation/segmentation_postprocessor.cpp``:
  with ``argmax`` the tensor's element type must be kInt32 or kInt64; with NCHW the shape is read
  as (N, C, H, W) with C = 1 for a class map; the mask is written as mono8 (class ids < 256).

So the packaged graph takes ``input`` (1, 3, H, W) float32 exactly as the encoder gives it and
emits ``output`` (1, 1, H, W) int32. PEM's own normalisation is expressed through the encoder:
``image_mean = mean / 255``, ``image_stddev = std / 255`` (the same values as ``(x - mean) / std``
on 0..255 pixels).
"""

from __future__ import annotations

from typing import Any

from contract.sidecar import Sidecar

INPUT_NAME = "input"
OUTPUT_NAME = "output"
PARAMS_FILE = "isaac_ros_pem_params.yaml"
LAUNCH_SCRIPT = "run_segformer_launch.sh"
NETWORK_OUTPUT_TYPES = ("softmax", "sigmoid", "argmax")
DATA_FORMATS = ("NCHW", "NHWC", "HWC")
ARGMAX_DTYPES = ("int32", "int64")
MAX_MASK_CLASSES = 256  # the raw mask is mono8


def encoder_normalization(sidecar: Sidecar) -> tuple[list[float], list[float]]:
    """The DNN image encoder's ``image_mean`` / ``image_stddev`` (on x / 255) that produce PEM's
    ``(x - mean) / std`` on 0..255 pixels."""
    mean = [float(f"{m / 255.0:.15g}") for m in sidecar.input.mean]  # 0.485, not 0.48500000000000004
    std = [float(f"{s / 255.0:.15g}") for s in sidecar.input.std]
    return mean, std


def palette(sidecar: Sidecar) -> list[int]:
    """The decoder's ``color_palette``: 0xRRGGBB per class id."""
    return [(r << 16) | (g << 8) | b for r, g, b in (c.color for c in sidecar.classes)]


def parameters(sidecar: Sidecar, onnx_file: str, engine_file: str) -> dict[str, dict[str, Any]]:
    """ROS 2 parameters per node (``ros2 run/launch --params-file``) for the packaged artifact.

    The node names are the ones ``isaac_ros_segformer_core.launch.py`` gives its nodes, and the
    DNN image encoder's; the ``tensor_rt`` node's are ``isaac_ros_tensor_rt``'s parameter names.
    :func:`launch_arguments` gives the same values as the SegFormer launch fragment's arguments.
    """
    _, _, height, width = sidecar.input.shape
    mean, std = encoder_normalization(sidecar)
    decoder = {
        "network_output_type": "argmax",
        "data_format": "NCHW",
        "color_segmentation_mask_encoding": "rgb8",
        "mask_width": width,
        "mask_height": height,
        "color_palette": palette(sidecar),
    }
    tensor_rt = {
        "model_file_path": onnx_file,
        "engine_file_path": engine_file,
        "input_tensor_names": ["input_tensor"],
        "input_binding_names": [INPUT_NAME],
        "output_tensor_names": ["output_tensor"],
        "output_binding_names": [OUTPUT_NAME],
        "force_engine_update": False,
        "verbose": False,
    }
    encoder = {
        "network_image_width": width,
        "network_image_height": height,
        "image_mean": mean,
        "image_stddev": std,
        "enable_padding": False,
    }
    return {
        "segformer_decoder_node": {"ros__parameters": decoder},
        "tensor_rt": {"ros__parameters": tensor_rt},
        "dnn_image_encoder": {"ros__parameters": encoder},
    }


def launch_arguments(sidecar: Sidecar, onnx_file: str, engine_file: str) -> dict[str, Any]:
    """The SegFormer launch fragment's arguments (isaac_ros_segformer_core.launch.py) for the
    packaged artifact: the same values as :func:`parameters`."""
    _, _, height, width = sidecar.input.shape
    mean, std = encoder_normalization(sidecar)
    return {
        "network_image_width": width,
        "network_image_height": height,
        "encoder_image_mean": mean,
        "encoder_image_stddev": std,
        "model_file_path": onnx_file,
        "engine_file_path": engine_file,
        "input_binding_names": [INPUT_NAME],
        "output_binding_names": [OUTPUT_NAME],
        "network_output_type": "argmax",
        "mask_width": width,
        "mask_height": height,
    }


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_yaml(params: dict[str, dict[str, Any]], comment: str) -> str:
    """The parameters as YAML (block maps, flow lists; no PyYAML needed to write it)."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for node, body in params.items():
        lines.append(f"{node}:")
        for key, value in body.items():
            if isinstance(value, dict):
                lines.append(f"  {key}:")
                lines += [f"    {k}: {_yaml_value(v)}" for k, v in value.items()]
            else:
                lines.append(f"  {key}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def launch_command(args: dict[str, Any]) -> str:
    """``ros2 launch`` of the Isaac ROS examples with the SegFormer fragment and these arguments."""
    parts = ["ros2 launch isaac_ros_examples isaac_ros_examples.launch.py launch_fragments:=segformer"]
    for key, value in args.items():
        text = _yaml_value(value).replace(" ", "")
        parts.append(f"{key}:='{text}'" if isinstance(value, list) else f"{key}:={text.strip(chr(34))}")
    return " \\\n    ".join(parts)


def check_bindings(
    inputs: dict[str, tuple[str, tuple]], outputs: dict[str, tuple[str, tuple]], num_classes: int
) -> None:
    """A model's inputs / outputs ``{name: (dtype, shape)}`` against the decoder's contract
    (argmax, NCHW); ValueError naming the first mismatch."""
    if list(inputs) != [INPUT_NAME]:
        raise ValueError(f"the model's inputs are {list(inputs)}, not [{INPUT_NAME!r}]")
    dtype, shape = inputs[INPUT_NAME]
    if dtype != "float32" or len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"input {INPUT_NAME!r} is {dtype} {shape}, not float32 N x 3 x H x W")
    if OUTPUT_NAME not in outputs:
        raise ValueError(f"the model has no output {OUTPUT_NAME!r}")
    dtype, out_shape = outputs[OUTPUT_NAME]
    if dtype not in ARGMAX_DTYPES:
        raise ValueError(f"output {OUTPUT_NAME!r} is {dtype}; argmax needs int32 / int64")
    if len(out_shape) != 4 or out_shape[1] != 1 or tuple(out_shape[2:]) != tuple(shape[2:]):
        raise ValueError(f"output {OUTPUT_NAME!r} is {out_shape}, not N x 1 x H x W = N x 1 x {shape[2:]}")
    if num_classes > MAX_MASK_CLASSES:
        raise ValueError(f"{num_classes} classes do not fit the decoder's mono8 mask")
