"""DeepStream ``nvinfer`` (DeepStream 9.x, TensorRT 10.x): config, labels, pipelines, parser contract.

The packaged graph emits the label map as INT32 ``argmax_1`` with shape (B, H, W, 1), so the stock
parser ``NvDsInferParseCustomPeopleSemSegNet`` in ``libnvds_infercustomparser.so`` reads it with no
custom code. Sources of truth (NVIDIA/DeepStream on GitHub):

- keys: ``src/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h`` (commit 2afbef0), the
  ``CONFIG_GROUP_INFER_*`` names; :data:`NVINFER_PROPERTY_KEYS` below is that table.
- parser: ``src/utils/nvdsinfer_customparser/nvdsinfer_customsegmentationparser.cpp`` (commit
  053ddd2): finds the INT32 / INT64 layer named ``argmax_1``, requires ``inferDims`` (without the
  batch) of exactly 3 dims == (network height, network width, 1), then copies H * W int32 class
  ids into the frame's class map (``classProbabilityMap = nullptr``). :func:`read_like_parser`
  does the same in numpy.
- template: ``src/apps/tao_apps/configs/nvinfer/citysemsegformer_tao/pgie_citysemsegformer_tao_config.txt``
  (CitySemSegFormer: ``network-type=2``, ``num-detected-classes=19``, ``segmentation-output-order``,
  ``network-mode=2``, ``onnx-file`` + ``model-engine-file``, ``labelfile-path``). PEM differs in
  the pre-processing: its normalisation is in the graph, so ``net-scale-factor=1``, ``offsets=0;0;0``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from contract.sidecar import Sidecar

PARSER_FUNCTION = "NvDsInferParseCustomPeopleSemSegNet"
PARSER_LIBRARY = "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so"
OUTPUT_NAME = "argmax_1"
CONFIG_FILE = "config_infer_primary_pem.txt"
APP_CONFIG_FILE = "deepstream_app_config.txt"
LABELS_FILE = "labels.txt"
GST_SCRIPT = "run_gst_launch.sh"

# [property] keys nvinfer parses (gstnvinfer_property_parser.h @ 2afbef0), with the value type
# gst_nvinfer_parse_props reads them as: int, float, str, bool (0/1), ints / floats (';'-separated).
# Space-separated key names, grouped by value type.
_KEYS_BY_TYPE: dict[str, str] = {
    "int": (
        "gie-unique-id process-mode interval gpu-id secondary-reinfer-interval use-dla-core "
        "batch-size tensor-meta-pool-size network-mode workspace-size network-type "
        "model-color-format scaling-filter scaling-compute-hw network-input-order uff-input-order "
        "num-detected-classes cluster-mode stabilize-buffer-count segmentation-output-order "
        "input-object-min-width input-object-min-height input-object-max-width "
        "input-object-max-height operate-on-gie-id"
    ),
    "float": "max-gpu-mem-per net-scale-factor classifier-threshold segmentation-threshold",
    "bool": (
        "output-tensor-meta disable-output-host-copy auto-inc-mem enable-dla dump-input-tensor "
        "dump-output-tensor overwrite-input-tensor overwrite-output-tensor raw-output-file-write "
        "is-classifier force-implicit-batch-dim maintain-aspect-ratio symmetric-padding "
        "input-tensor-from-meta enable-dbscan crop-objects-to-roi-boundary strongly-typed "
        "warmup-engine classifier-async-mode output-instance-mask"
    ),
    "str": (
        "labelfile-path ip-tensor-file op-tensor-files model-engine-file int8-calib-file "
        "output-blob-names output-io-formats layer-device-precision mean-file custom-lib-path "
        "parse-bbox-func-name parse-bbox-instance-mask-func-name parse-segmentation-func-name "
        "engine-create-func-name parse-classifier-func-name custom-network-config model-file "
        "proto-file uff-file uff-input-blob-name tlt-encoded-model tlt-model-key onnx-file "
        "dynamic-properties classifier-type"
    ),
    "ints": "infer-dims input-dims uff-input-dims operate-on-class-ids filter-out-class-ids",
    "floats": "offsets",
}
NVINFER_PROPERTY_KEYS: dict[str, str] = {
    key: kind for kind, keys in _KEYS_BY_TYPE.items() for key in keys.split()
}
# Allowed values of the enumerated keys (nvdsinfer_context.h: NvDsInferNetworkMode,
# NvDsInferNetworkType, NvDsInferFormat, NvDsInferTensorOrder).
NVINFER_ENUMS: dict[str, tuple[int, ...]] = {
    "network-mode": (0, 1, 2, 3),  # FP32, INT8, FP16, BEST
    "network-type": (0, 1, 2, 3, 100),  # detector, classifier, segmentation, instance seg, other
    "model-color-format": (0, 1, 2),  # RGB, BGR, GRAY
    "segmentation-output-order": (0, 1),  # NCHW, NHWC
    "process-mode": (1, 2),  # full frame, objects
}
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}

_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_VALUE_PATTERNS = {
    "int": re.compile(r"[-+]?\d+"),
    "float": re.compile(_NUMBER),
    "bool": re.compile(r"[01]"),
    "ints": re.compile(r"[-+]?\d+(;[-+]?\d+)*;?"),
    "floats": re.compile(rf"{_NUMBER}(;{_NUMBER})*;?"),
    "str": re.compile(r"\S(.*\S)?"),
}


def nvinfer_config(sidecar: Sidecar, onnx_file: str, labels_file: str = LABELS_FILE) -> dict[str, str]:
    """The ``[property]`` group of an nvinfer config for a packaged (``deepstream``) artifact."""
    batch, _, height, width = sidecar.input.shape
    assert isinstance(height, int) and isinstance(width, int), "deepstream packages are static H x W"
    batch_size = batch if isinstance(batch, int) else 1
    precision = sidecar.precision
    strongly_typed = precision in ("fp16", "int8")  # the graph carries its precisions (Q/DQ, casts)
    # nvinfer names the engine it builds ONNX_b<batch>_gpu<id>_<mode>.engine beside the ONNX.
    mode_name = {0: "fp32", 1: "int8", 2: "fp16"}[NETWORK_MODE[precision]]
    props = {
        "gpu-id": "0",
        "gie-unique-id": "1",
        "onnx-file": onnx_file,
        "model-engine-file": f"{onnx_file}_b{batch_size}_gpu0_{mode_name}.engine",
        "labelfile-path": labels_file,
        "batch-size": str(batch_size),
        # Normalisation is in the graph: nvinfer hands it RGB 0..255 floats unchanged.
        "net-scale-factor": "1.0",
        "offsets": "0;0;0",
        "model-color-format": "0" if sidecar.input.color == "RGB" else "1",
        "infer-dims": f"3;{height};{width}",
        "maintain-aspect-ratio": "0",
        "network-mode": str(NETWORK_MODE[precision]),
        "network-type": "2",
        "num-detected-classes": str(sidecar.num_classes),
        "segmentation-output-order": "1",  # argmax_1 is H x W x 1 (HWC)
        "segmentation-threshold": "0.0",
        "output-blob-names": OUTPUT_NAME,
        "parse-segmentation-func-name": PARSER_FUNCTION,
        "custom-lib-path": PARSER_LIBRARY,
        "interval": "0",
    }
    if strongly_typed:
        props["strongly-typed"] = "1"
    return props


def render_config(props: Mapping[str, str], comment: str) -> str:
    lines = [f"# {line}" for line in comment.splitlines()] + ["[property]"]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def check_config(text: str) -> dict[str, str]:
    """Parse an nvinfer config's ``[property]`` group and check each key against
    :data:`NVINFER_PROPERTY_KEYS` (name, value type, enumerated values); ValueError on the first
    problem. Returns the properties."""
    props: dict[str, str] = {}
    group = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            group = line.strip("[]")
            continue
        if group != "property":
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ValueError(f"line {number}: {line!r} is not key=value")
        if key not in NVINFER_PROPERTY_KEYS:
            raise ValueError(f"line {number}: {key!r} is not an nvinfer [property] key")
        kind = NVINFER_PROPERTY_KEYS[key]
        if not _VALUE_PATTERNS[kind].fullmatch(value):
            raise ValueError(f"line {number}: {key}={value!r} is not a valid {kind} value")
        if key in NVINFER_ENUMS and int(value) not in NVINFER_ENUMS[key]:
            raise ValueError(f"line {number}: {key}={value} is not one of {NVINFER_ENUMS[key]}")
        if key in props:
            raise ValueError(f"line {number}: {key!r} is set twice")
        props[key] = value
    if group is None and not props:
        raise ValueError("no [property] group")
    return props


def check_parser_contract(props: Mapping[str, str], outputs: Mapping[str, tuple[str, tuple]]) -> None:
    """The model's outputs ``{name: (dtype, shape with batch)}`` and the config against what
    ``NvDsInferParseCustomPeopleSemSegNet`` needs; ValueError naming the first mismatch."""
    if props.get("parse-segmentation-func-name") != PARSER_FUNCTION:
        raise ValueError(f"parse-segmentation-func-name must be {PARSER_FUNCTION}")
    if props.get("network-type") != "2":
        raise ValueError("network-type must be 2 (segmentation) for a segmentation parser")
    if OUTPUT_NAME not in outputs:
        raise ValueError(f"the model has no output {OUTPUT_NAME!r} (it has {', '.join(outputs)})")
    if props.get("output-blob-names") != OUTPUT_NAME:
        raise ValueError(f"output-blob-names must be {OUTPUT_NAME}")
    dtype, shape = outputs[OUTPUT_NAME]
    if dtype not in ("int32", "int64"):
        raise ValueError(f"{OUTPUT_NAME} is {dtype}; the parser reads INT32 / INT64 only")
    _, height, width = (int(v) for v in props["infer-dims"].split(";"))
    infer_dims = tuple(shape[1:])  # nvinfer's inferDims leave out the (explicit) batch axis
    if infer_dims != (height, width, 1):
        raise ValueError(f"{OUTPUT_NAME} dims {infer_dims} are not network H x W x 1 = {(height, width, 1)}")


def read_like_parser(layer: np.ndarray, height: int, width: int) -> np.ndarray:
    """What the stock parser writes into the frame's class map from one frame's ``argmax_1``
    buffer: INT64 narrowed element by element, INT32 copied, H * W values in row-major order
    (the buffer is H x W x 1, so element ``y * W + x`` is pixel (y, x))."""
    if layer.shape != (height, width, 1):
        raise ValueError(f"layer dims {layer.shape} are not {(height, width, 1)}")
    if layer.dtype == np.int64:
        flat = layer.reshape(-1).astype(np.int32)
    elif layer.dtype == np.int32:
        flat = np.frombuffer(np.ascontiguousarray(layer).tobytes(), np.int32, count=height * width)
    else:
        raise ValueError(f"layer dtype {layer.dtype} is not INT32 / INT64")
    return flat.reshape(height, width)


def labels_text(sidecar: Sidecar) -> str:
    """nvinfer ``labelfile-path``: one class name per line, in class-id order."""
    return "".join(f"{c.name}\n" for c in sidecar.classes)


def gst_launch_line(config_file: str, height: int, width: int) -> str:
    """A ``gst-launch-1.0`` pipeline: decode a video, infer, overlay the class map, write an MP4."""
    return (
        'gst-launch-1.0 -e filesrc location="${1:?usage: run_gst_launch.sh VIDEO.mp4 [OUT.mp4]}" ! '
        "qtdemux ! h264parse ! nvv4l2decoder ! m.sink_0 "
        f"nvstreammux name=m batch-size=1 width={width} height={height} ! "
        f"nvinfer config-file-path={config_file} ! "
        f"nvsegvisual width={width} height={height} ! nvvideoconvert ! "
        'nvv4l2h264enc ! h264parse ! qtmux ! filesink location="${2:-pem_segmentation.mp4}"'
    )


def deepstream_app_config(config_file: str, height: int, width: int) -> str:
    """A ``deepstream-app -c`` config: one file source, the PEM nvinfer, segmentation overlay,
    an MP4 file sink (edit ``uri`` under ``[source0]``)."""
    return f"""# deepstream-app -c {APP_CONFIG_FILE}   (edit uri= below; output: pem_segmentation.mp4)
[application]
enable-perf-measurement=1
perf-measurement-interval-sec=5

[tiled-display]
enable=0

[source0]
enable=1
# 3 = multi URI
type=3
uri=file:///opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.mp4
num-sources=1
gpu-id=0

[streammux]
gpu-id=0
batch-size=1
width={width}
height={height}
batched-push-timeout=40000
live-source=0

[primary-gie]
enable=1
gpu-id=0
gie-unique-id=1
config-file={config_file}

[segvisual]
enable=1
gpu-id=0
width={width}
height={height}

[osd]
enable=1
gpu-id=0

[sink0]
enable=1
# 3 = file
type=3
# 1 = mp4, codec 1 = h264
container=1
codec=1
sync=0
output-file=pem_segmentation.mp4
"""
