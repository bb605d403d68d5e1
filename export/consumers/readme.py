"""The README.md written into each bundle: exact commands, and what was and was not verified."""

from __future__ import annotations

from typing import Any

from contract.sidecar import Sidecar
from export.consumers import deepstream, isaac_ros


def bundle_readme(consumer: str, spec: Sidecar, height: int, width: int, **extra: Any) -> str:
    head = (
        f"# PEM {spec.task} model for {consumer} ({spec.head} head, {spec.precision}, {height} x {width})\n\n"
    )
    return head + {"deepstream": _deepstream, "isaac-ros": _isaac_ros, "triton": _triton}[consumer](
        spec, height, width, **extra
    )


def _deepstream(spec: Sidecar, height: int, width: int, **_: Any) -> str:
    return f"""Files: `model.onnx` (the exported graph with its ends edited: RGB 0..255 float input with the
normalisation inside, label map as INT32 `argmax_1` of shape {height} x {width} x 1), `model.json` (the
sidecar; `consumer.edits` lists the edits), `{deepstream.CONFIG_FILE}` (nvinfer), `{deepstream.LABELS_FILE}`,
`{deepstream.APP_CONFIG_FILE}`, `{deepstream.GST_SCRIPT}`.

Run (DeepStream 9.x, TensorRT 10.x; nvinfer builds the engine from `model.onnx` on first start and
writes it as `model-engine-file`):

```
./{deepstream.GST_SCRIPT} input.mp4 segmented.mp4
deepstream-app -c {deepstream.APP_CONFIG_FILE}      # edit uri= under [source0] first
```

Precision follows the artifact: `network-mode` {deepstream.NETWORK_MODE[spec.precision]} ({spec.precision}).
For FP16 speed, export with `--precision fp16` (LayerNorm, Softmax and the similarity feeding the
argmax stay FP32 in the graph, built `strongly-typed=1`) rather than setting `network-mode=2` on an
FP32 graph, which lets TensorRT pick FP16 for those layers too.

The stock parser `{deepstream.PARSER_FUNCTION}` (`libnvds_infercustomparser.so`) copies
`argmax_1` into the frame's `NvDsInferSegmentationMeta` class map: no custom code. `num-detected-classes`
is {spec.num_classes}; class names are in `{deepstream.LABELS_FILE}`.

Verified when this bundle was written (no DeepStream here): every config key against nvinfer's key
table (NVIDIA/DeepStream `gstnvinfer_property_parser.h`), the output name / dtype / dims against
the parser's contract (`nvdsinfer_customsegmentationparser.cpp`), the sidecar against the graph.
pem-deploy's tests also run this graph with onnxruntime, read `argmax_1` the way the parser does,
and compare with `runtime.Segmenter`. Not run: DeepStream itself, the engine build.
"""


def _isaac_ros(spec: Sidecar, height: int, width: int, launch: dict[str, Any], **_: Any) -> str:
    return f"""Files: `model.onnx` (input `input` float32 1 x 3 x {height} x {width} as the Isaac ROS DNN
image encoder produces it, output `output` int32 1 x 1 x {height} x {width}: argmax class ids, NCHW),
`model.json` (sidecar; `consumer.edits` lists the graph edits), `{isaac_ros.PARAMS_FILE}` (ROS 2
parameters of the decoder, TensorRT and encoder nodes), `{isaac_ros.LAUNCH_SCRIPT}` (the command below).

Run with the SegFormer launch fragment of `isaac_ros_image_segmentation` (copy `model.onnx` to
the path given; the TensorRT node builds the plan on first start):

```
{isaac_ros.launch_command(launch)}
```

The encoder's mean / stddev are PEM's (divided by 255), so its output is exactly the normalised
input the graph expects. The decoder publishes `segformer/raw_segmentation_mask` (mono8 class ids)
and a colour mask with the palette in the parameter file.

Verified when this bundle was written (no ROS 2 / Isaac ROS here): bindings, dtypes and layout
against the decoder's contract (`segmentation_postprocessor.cpp`: argmax needs int32/int64; NCHW
reads N x C x H x W), the sidecar against the graph. Not run: Isaac ROS, the engine build.
"""


def _triton(spec: Sidecar, height: int, width: int, models: list[str], engine: bool, **_: Any) -> str:
    listing = "\n".join(f"- `{m}`" for m in models)
    extra_outputs = ", plus `panoptic` and `segments`" if spec.head == "panoptic" else ""
    labels_mb = height * width * 4 / 1e6
    scores_mb = labels_mb * spec.num_classes
    graph = "a TensorRT plan (`tensorrt_plan`)" if engine else "ONNX Runtime with the TensorRT accelerator"
    return f"""`model_repository/` holds:

{listing}

`{models[0]}` runs the graph through {graph}; `{models[0]}_runtime` is a Python-backend model around
pem-deploy's torch-free runtime (any image size: send uint8 H x W x 3 BGR as `image`, get `labels`
H x W back (uint8 when the class ids fit a byte){extra_outputs}).

```
tritonserver --model-repository=$PWD/model_repository
```

The Python-backend stub must import `numpy`, `cv2`, `onnxruntime` and pem-deploy's `runtime`:
start `tritonserver` from an environment where `pip install pem-deploy[ort]` was done, with that
environment's `bin` first on `PATH` and the stub built for its Python version (the NGC image ships
Python 3.12; the `nvidia-pytriton` wheel has stubs for 3.8-3.13 under
`pytriton/tritonserver/python_backend_stubs/`), or pack the environment with `conda-pack` and
set `EXECUTION_ENV_PATH` in the model's config. With the `nvidia-pytriton` 0.7.0 stubs that
environment needs numpy < 2 (they are built on numpy 1.x: under numpy 2 the outputs arrive empty).
On a GPU, set the `providers` parameter of
`{models[0]}_runtime` to `CUDAExecutionProvider` (or `TensorrtExecutionProvider`).

Outputs are label maps, not dense class scores: {height} x {width} int32 is {labels_mb:.2f} MB per
image where float32 scores for {spec.num_classes} classes would be {scores_mb:.2f} MB.
Co-located clients can also use Triton's system / CUDA shared memory to avoid the copy.
"""
