"""Consumer bundles (export/consumers): DeepStream, Isaac ROS and Triton contracts, checked as far
as each consumer can be run here. Hand-built ONNX artifacts (tests/helpers/runtime_models) keep
these fast; one test packages a real exported PEM graph."""

import json
import os
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from contract.errors import ArtifactError, OutputExistsError, OutputIsInputError, SidecarError
from contract.fs import sha256_file
from contract.sidecar import Sidecar
from export.consumers import PackageError, PackageOptions, deepstream, isaac_ros, package_artifact, triton
from runtime import Segmenter
from tests.helpers.runtime_models import (
    image_panoptic_model,
    semantic_model,
    sidecar_for,
    write_artifact,
)

MEAN, STD = [30.0, 80.0, 20.0], [2.0, 0.5, 4.0]  # uneven on purpose: a wrong normalisation changes the argmax


def _semantic_artifact(tmp_path, preprocess="none", h=32, w=64):
    """labels = argmax_c((x_c - mean_c) / std_c) with the sidecar's normalisation, outside or
    inside the graph (preprocess normalize / uint8)."""
    folder = tmp_path / f"art-{preprocess}"
    folder.mkdir()
    model = semantic_model(h, w)
    data = sidecar_for(model, shape=(1, 3, h, w))
    data["input"]["normalization"] = {"mean": MEAN, "std": STD}
    if preprocess != "none":
        from export.consumers.graph_edit import normalize_in_graph

        spec = Sidecar.from_dict(data).input
        normalize_in_graph(model, spec)  # Sub/Mul in front: a graph that normalises itself
        data["input"]["normalize_in_graph"] = True
        if preprocess == "uint8":
            inner = model.graph.input[0]
            inner.type.tensor_type.elem_type = onnx.TensorProto.UINT8
            cast = onnx.helper.make_node("Cast", ["images"], ["images_f"], to=onnx.TensorProto.FLOAT)
            for node in model.graph.node:
                node.input[:] = ["images_f" if i == "images" else i for i in node.input]
            model.graph.node.insert(0, cast)
            data["input"]["dtype"] = "uint8"
    path = folder / "model.onnx"
    onnx.save(model, path)
    data["sha256"] = sha256_file(path)
    path.with_suffix(".json").write_text(json.dumps(data))
    return path


def _image(h=32, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_same_labels(actual, bgr, expected):
    """Equal labels wherever the normalised channel scores have no tie: with integer pixels and
    this normalisation, exact ties occur, and each path (runtime numpy, graph Sub/Mul, the Isaac
    ROS encoder's x / 255 form) rounds them differently by an ulp."""
    scores = (bgr[..., ::-1].astype(np.float64) - MEAN) / STD
    top2 = np.sort(scores, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 1e-3
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(actual[clear], expected[clear])


def _io(model_path):
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session


# -- DeepStream ---------------------------------------------------------------------------------


@pytest.mark.parametrize("preprocess", ["none", "normalize", "uint8"])
def test_deepstream_argmax_1_read_like_the_stock_parser_equals_the_runtime(tmp_path, preprocess):
    artifact = _semantic_artifact(tmp_path, preprocess)
    bundle = package_artifact(artifact, tmp_path / "ds", PackageOptions("deepstream"))
    root = bundle.root
    props = deepstream.check_config((root / deepstream.CONFIG_FILE).read_text())
    assert props["net-scale-factor"] == "1.0" and props["offsets"] == "0;0;0"
    assert props["network-type"] == "2" and props["num-detected-classes"] == "3"
    assert props["infer-dims"] == "3;32;64" and props["output-blob-names"] == "argmax_1"
    assert props["parse-segmentation-func-name"] == "NvDsInferParseCustomPeopleSemSegNet"
    session = _io(root / "model.onnx")
    (out,) = session.get_outputs()
    outputs = {out.name: ("int32" if out.type == "tensor(int32)" else out.type, tuple(out.shape))}
    deepstream.check_parser_contract(props, outputs)
    runtime = Segmenter.open(artifact)
    for seed in range(3):
        bgr = _image(seed=seed)
        # nvinfer: RGB (model-color-format=0), (x - 0) * 1.0 as float32 NCHW
        rgb = bgr[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None]
        (layer,) = session.run(["argmax_1"], {session.get_inputs()[0].name: rgb})
        class_map = deepstream.read_like_parser(layer[0], 32, 64)
        _assert_same_labels(class_map, bgr, runtime.predict(bgr).labels)
    assert (root / "labels.txt").read_text().split() == ["road", "sky", "car"]
    assert os.access(root / deepstream.GST_SCRIPT, os.X_OK)
    assert (
        "nvinfer config-file-path=config_infer_primary_pem.txt" in (root / deepstream.GST_SCRIPT).read_text()
    )
    assert f"config-file={deepstream.CONFIG_FILE}" in (root / deepstream.APP_CONFIG_FILE).read_text()
    spec = Sidecar.from_file(root / "model.json")
    assert spec.consumer is not None and spec.consumer.profile == "deepstream"
    assert spec.consumer.packaged_from_sha256 == sha256_file(artifact) and spec.consumer.edits
    assert spec.provenance.sha256 == sha256_file(root / "model.onnx")


def test_deepstream_config_check_refuses_unknown_keys_types_and_values():
    good = "[property]\nnetwork-type=2\ninfer-dims=3;64;128\noffsets=0;0;0\nnet-scale-factor=1.0\n"
    assert deepstream.check_config(good)["infer-dims"] == "3;64;128"
    for bad, why in [
        ("[property]\nnetwork-typ=2\n", "not an nvinfer"),
        ("[property]\nnetwork-type=two\n", "not a valid int"),
        ("[property]\nnetwork-type=7\n", "not one of"),
        ("[property]\ninfer-dims=3,64,128\n", "not a valid ints"),
        ("[property]\nnet-scale-factor=1.0\nnet-scale-factor=2\n", "set twice"),
        ("[property]\nstrongly-typed=yes\n", "not a valid bool"),
    ]:
        with pytest.raises(ValueError, match=why):
            deepstream.check_config(bad)
    props = deepstream.check_config(good + "output-blob-names=argmax_1\nparse-segmentation-func-name="
                                    "NvDsInferParseCustomPeopleSemSegNet\n")  # fmt: skip
    with pytest.raises(ValueError, match="not network H x W x 1"):
        deepstream.check_parser_contract(props, {"argmax_1": ("int32", (1, 64, 128))})
    with pytest.raises(ValueError, match="INT32 / INT64 only"):
        deepstream.check_parser_contract(props, {"argmax_1": ("float32", (1, 64, 128, 1))})
    deepstream.check_parser_contract(props, {"argmax_1": ("int64", (1, 64, 128, 1))})


def test_parser_reading_matches_int64_narrowing_and_rejects_bad_layers():
    layer = np.arange(12, dtype=np.int64).reshape(3, 4, 1)
    np.testing.assert_array_equal(deepstream.read_like_parser(layer, 3, 4), np.arange(12).reshape(3, 4))
    with pytest.raises(ValueError, match="dims"):
        deepstream.read_like_parser(layer.reshape(4, 3, 1), 3, 4)
    with pytest.raises(ValueError, match="dtype"):
        deepstream.read_like_parser(layer.astype(np.float32), 3, 4)


def test_deepstream_and_isaac_refuse_panoptic_and_leave_nothing(tmp_path):
    artifact = write_artifact(tmp_path, image_panoptic_model(), head="panoptic", num_queries=3)
    for consumer in ("deepstream", "isaac-ros"):
        with pytest.raises(PackageError, match="panoptic artifact.*one class map per frame"):
            package_artifact(artifact, tmp_path / consumer, PackageOptions(consumer))
        assert not (tmp_path / consumer).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.onnx"]  # no staging left


def test_package_follows_the_output_rules_and_refuses_bad_options(tmp_path):
    artifact = _semantic_artifact(tmp_path)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(OutputExistsError, match="--exist-ok"):
        package_artifact(artifact, out, PackageOptions("triton"))
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    (out / "README.md").write_text("the user's readme")
    with pytest.raises(OutputExistsError, match="README.md.*--overwrite"):
        package_artifact(artifact, out, PackageOptions("triton"), exist_ok=True)
    (out / "README.md").unlink()
    package_artifact(artifact, out, PackageOptions("triton"), exist_ok=True)  # added beside mine.txt
    assert (out / "mine.txt").read_text() == "user data"
    assert (out / "model_repository" / "pem" / "config.pbtxt").is_file()
    with pytest.raises(OutputIsInputError):  # the bundle's model.onnx would replace the artifact's
        package_artifact(
            artifact, artifact.parent, PackageOptions("deepstream"), exist_ok=True, overwrite=True
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert package_artifact(artifact, empty, PackageOptions("triton")).root == empty
    assert (empty / "model_repository" / "pem" / "config.pbtxt").is_file()
    with pytest.raises(PackageError, match="--for nvinfer"):
        package_artifact(artifact, tmp_path / "x", PackageOptions("nvinfer"))
    packaged = package_artifact(artifact, tmp_path / "ds", PackageOptions("deepstream")).root
    with pytest.raises(
        ArtifactError, match="packaged for deepstream.*run the exported artifact it was made from"
    ):
        Segmenter.open(packaged / "model.onnx")
    with pytest.raises(PackageError, match="already packaged for deepstream"):
        package_artifact(packaged / "model.onnx", tmp_path / "again", PackageOptions("triton"))


def test_a_graph_the_edits_cannot_take_is_one_package_error(tmp_path):
    model = semantic_model(32, 64)
    model.graph.node[-1].attribute[0].i = onnx.TensorProto.INT64  # labels int64, sidecar says int32
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    folder = tmp_path / "a"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(model, path)
    data = sidecar_for(semantic_model(32, 64))
    data["sha256"] = sha256_file(path)
    path.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="model.onnx: the graph's labels output is not int32"):
        package_artifact(path, tmp_path / "ds", PackageOptions("deepstream"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_sidecar_consumer_section_is_typed(tmp_path):
    artifact = _semantic_artifact(tmp_path)
    root = package_artifact(artifact, tmp_path / "ds", PackageOptions("deepstream")).root
    data = json.loads((root / "model.json").read_text())
    assert Sidecar.from_dict(data).to_dict() == data  # round trip
    for change, where in [
        (lambda d: d["consumer"].update(profile="gstreamer"), "consumer.profile"),
        (lambda d: d["outputs"][0].update(shape=[1, 32, 64]), r"outputs\[0\].shape"),
        (lambda d: d["outputs"][0].update(name="labels"), "lacks output"),
        (lambda d: d["consumer"].update(edits="one"), "consumer.edits"),
        (lambda d: d.update(head="panoptic", task="panoptic"), "consumer.profile"),
    ]:
        broken = json.loads(json.dumps(data))
        change(broken)
        with pytest.raises(SidecarError, match=where):
            Sidecar.from_dict(broken)


# -- Isaac ROS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("preprocess", ["none", "normalize", "uint8"])
def test_isaac_ros_bindings_and_encoder_values_reproduce_the_runtime(tmp_path, preprocess):
    import yaml

    artifact = _semantic_artifact(tmp_path, preprocess)
    root = package_artifact(artifact, tmp_path / "isaac", PackageOptions("isaac-ros")).root
    session = _io(root / "model.onnx")
    inputs = {
        i.name: ("float32" if i.type == "tensor(float)" else i.type, tuple(i.shape))
        for i in session.get_inputs()
    }
    outputs = {
        o.name: ("int32" if o.type == "tensor(int32)" else o.type, tuple(o.shape))
        for o in session.get_outputs()
    }
    isaac_ros.check_bindings(inputs, outputs, 3)
    assert inputs == {"input": ("float32", (1, 3, 32, 64))} and outputs == {
        "output": ("int32", (1, 1, 32, 64))
    }
    params = yaml.safe_load((root / isaac_ros.PARAMS_FILE).read_text())
    decoder = params["segformer_decoder_node"]["ros__parameters"]
    assert (
        decoder["network_output_type"] in isaac_ros.NETWORK_OUTPUT_TYPES
        and decoder["network_output_type"] == "argmax"
    )
    assert decoder["data_format"] in isaac_ros.DATA_FORMATS and decoder["data_format"] == "NCHW"
    assert (decoder["mask_width"], decoder["mask_height"]) == (64, 32)
    assert decoder["color_palette"] == [0x804080, 0x4682B4, 0x00008E]
    trt = params["tensor_rt"]["ros__parameters"]
    assert trt["input_binding_names"] == ["input"] and trt["output_binding_names"] == ["output"]
    encoder = params["dnn_image_encoder"]["ros__parameters"]
    mean, std = np.array(encoder["image_mean"]), np.array(encoder["image_stddev"])
    runtime = Segmenter.open(artifact)
    for seed in range(3):
        bgr = _image(seed=seed)
        # The DNN image encoder: RGB, x / 255, (x - image_mean) / image_stddev, NCHW float32.
        rgb = bgr[..., ::-1].astype(np.float32) / 255.0
        tensor = ((rgb - mean) / std).astype(np.float32).transpose(2, 0, 1)[None]
        (out,) = session.run(["output"], {"input": tensor})
        _assert_same_labels(out[0, 0], bgr, runtime.predict(bgr).labels)
    assert "launch_fragments:=segformer" in (root / isaac_ros.LAUNCH_SCRIPT).read_text()
    assert "input_binding_names:='[\"input\"]'" in (root / "README.md").read_text()


RCLPY_PYTHON_VARIABLE = "PEM_RCLPY_PYTHON"  # a Python with rclpy (e.g. 3.12 + ros-jazzy-rclpy wheels)
_RCLPY_PROBE = """
import json, sys
from rclpy.parameter import Parameter, parameter_dict_from_yaml_file, parameter_value_to_python
out = {}
for node in sys.argv[2:]:
    values = parameter_dict_from_yaml_file(sys.argv[1], target_nodes=[node])
    out[node] = {
        k: [Parameter.Type(v.value.type).name, parameter_value_to_python(v.value)] for k, v in values.items()
    }
print(json.dumps(out))
"""


def _rclpy_python():
    import importlib.util
    import sys

    if importlib.util.find_spec("rclpy") is not None:
        return sys.executable
    return os.environ.get(RCLPY_PYTHON_VARIABLE)


@pytest.mark.skipif(
    _rclpy_python() is None,
    reason=f"rclpy is not installed here and ${RCLPY_PYTHON_VARIABLE} names no Python with it",
)
def test_isaac_ros_params_file_loads_in_rclpy_with_the_decoders_types(tmp_path):
    """ROS 2's own parameter-file reader (rclpy) loads every node's parameters with the types the
    Isaac ROS nodes declare (strings, integers, integer / double / string arrays, booleans)."""
    import subprocess

    root = package_artifact(
        _semantic_artifact(tmp_path), tmp_path / "isaac", PackageOptions("isaac-ros")
    ).root
    nodes = ["segformer_decoder_node", "tensor_rt", "dnn_image_encoder"]
    run = subprocess.run(
        [_rclpy_python(), "-c", _RCLPY_PROBE, str(root / isaac_ros.PARAMS_FILE), *nodes],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout)
    decoder, trt, encoder = (loaded[n] for n in nodes)
    assert decoder["network_output_type"] == ["STRING", "argmax"] and decoder["data_format"] == [
        "STRING",
        "NCHW",
    ]
    assert decoder["mask_width"] == ["INTEGER", 64] and decoder["mask_height"] == ["INTEGER", 32]
    assert decoder["color_palette"][0] == "INTEGER_ARRAY"
    assert trt["input_binding_names"] == ["STRING_ARRAY", ["input"]]
    assert trt["output_binding_names"] == ["STRING_ARRAY", ["output"]]
    assert trt["force_engine_update"] == ["BOOL", False]
    assert encoder["image_mean"][0] == "DOUBLE_ARRAY" and encoder["image_stddev"][0] == "DOUBLE_ARRAY"
    np.testing.assert_allclose(encoder["image_mean"][1], [m / 255 for m in MEAN], rtol=1e-10)
    np.testing.assert_allclose(encoder["image_stddev"][1], [s / 255 for s in STD], rtol=1e-10)


# -- Triton ----------------------------------------------------------------------------------------

try:  # Triton's own ModelConfig schema (generated protobuf module shipped in tritonclient[grpc])
    from tritonclient.grpc import model_config_pb2
except ImportError:
    model_config_pb2 = None
needs_triton_schema = pytest.mark.skipif(
    model_config_pb2 is None, reason="tritonclient is not installed (pip install 'tritonclient[grpc]')"
)


def _parse_config(path):
    """Parse with Triton's own ModelConfig schema: unknown fields or wrong types raise."""
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _engine_artifact(tmp_path):
    """A TensorRT 'engine' artifact (opaque bytes: packaging copies it, never opens it)."""
    folder = tmp_path / "engine"
    folder.mkdir()
    path = folder / "model.fp16.engine"
    path.write_bytes(b"not a real plan" * 10)
    model = semantic_model(32, 64)
    data = sidecar_for(model, precision="fp16", tensorrt={"version": "10.16.1", "precision": "fp16"})
    data.update(model_file=path.name, sha256=sha256_file(path))
    path.with_suffix(".json").write_text(json.dumps(data))
    return path


def _dynamic_artifact(tmp_path):
    folder = tmp_path / "dyn"
    folder.mkdir()
    return write_artifact(folder, semantic_model(32, 64, batch="N"), shape=("N", 3, 32, 64))


@needs_triton_schema
def test_every_triton_config_parses_with_tritons_schema(tmp_path):
    artifacts = {
        "semantic": _semantic_artifact(tmp_path),
        "panoptic": write_artifact(tmp_path, image_panoptic_model(), head="panoptic", num_queries=3),
        "engine": _engine_artifact(tmp_path),
        "dynamic": _dynamic_artifact(tmp_path),
    }
    parsed = {}
    for kind, artifact in artifacts.items():
        root = package_artifact(
            artifact, tmp_path / f"triton-{kind}", PackageOptions("triton", instances=2)
        ).root
        configs = sorted((root / "model_repository").glob("*/config.pbtxt"))
        assert configs
        for path in configs:
            config = _parse_config(path)
            assert config.name == path.parent.name
            parsed[(kind, config.name)] = config
    sem = parsed[("semantic", "pem")]
    assert sem.platform == "onnxruntime_onnx" and sem.max_batch_size == 0
    assert [(o.name, model_config_pb2.DataType.Name(o.data_type)) for o in sem.output] == [
        ("labels", "TYPE_INT32")
    ]
    (accelerator,) = sem.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert {"precision_mode", "trt_engine_cache_enable", "trt_timing_cache_enable"} <= set(
        accelerator.parameters
    )
    assert sem.instance_group[0].count == 2 and sem.model_warmup[0].inputs["images"].zero_data
    dyn = parsed[("dynamic", "pem")]
    assert dyn.max_batch_size == 4 and list(dyn.input[0].dims) == [3, 32, 64]
    assert list(dyn.dynamic_batching.preferred_batch_size) == [2, 4]
    plan = parsed[("engine", "pem")]
    assert plan.platform == "tensorrt_plan" and plan.default_model_filename == "model.plan"
    ensemble = parsed[("panoptic", "pem_panoptic")]
    assert ensemble.platform == "ensemble" and [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "pem",
        "pem_fuse",
    ]
    runtime = parsed[("panoptic", "pem_runtime")]
    assert runtime.backend == "python" and [o.name for o in runtime.output] == [
        "labels",
        "panoptic",
        "segments",
    ]
    assert model_config_pb2.DataType.Name(runtime.output[0].data_type) == "TYPE_UINT8"  # 3 classes: a byte


@needs_triton_schema
def test_the_schema_check_fails_on_unknown_keys_and_wrong_types(tmp_path):
    from google.protobuf import text_format

    root = package_artifact(_semantic_artifact(tmp_path), tmp_path / "t", PackageOptions("triton")).root
    text = (root / "model_repository" / "pem" / "config.pbtxt").read_text()
    for broken in (
        text + "\nmax_batch_sizes: 4\n",
        text.replace("max_batch_size: 0", 'max_batch_size: "zero"'),
        text.replace("KIND_GPU", "KIND_TPU"),
        re.sub(r"data_type: TYPE_INT32", "data_type: INT32", text),
    ):
        with pytest.raises(text_format.ParseError):
            text_format.Parse(broken, model_config_pb2.ModelConfig())


def test_pbtxt_writer_quotes_strings_and_leaves_enums_bare():
    text = triton.to_pbtxt({"name": 'a "b"', "kind": triton.Enum("KIND_CPU"), "dims": [1, -1], "flag": True})
    assert text.splitlines() == ['name: "a \\"b\\""', "kind: KIND_CPU", "dims: [1, -1]", "flag: true"]


def test_real_exported_graph_packages_for_every_consumer(tmp_path):
    """A real PEM graph (tiny preset, random weights) through export -> package: the DeepStream
    parser reading and the Isaac ROS output both equal the runtime's labels."""
    pytest.importorskip("torch")
    from export.pipeline import ExportOptions, export_artifact
    from tests.helpers.export_models import tiny_source

    result = export_artifact(tiny_source(), ExportOptions(out_dir=tmp_path / "exp", head="semantic"))
    runtime = Segmenter.open(result.onnx_path)
    bgr = _image(64, 128, seed=3)
    expected = runtime.predict(bgr).labels
    ds = package_artifact(result.onnx_path, tmp_path / "ds", PackageOptions("deepstream")).root
    session = _io(ds / "model.onnx")
    rgb = bgr[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None]
    (layer,) = session.run(["argmax_1"], {"images": rgb})
    np.testing.assert_array_equal(deepstream.read_like_parser(layer[0], 64, 128), expected)
    isaac = package_artifact(result.onnx_path, tmp_path / "isaac", PackageOptions("isaac-ros")).root
    spec = Sidecar.from_file(isaac / "model.json")
    mean, std = np.array(spec.input.mean), np.array(spec.input.std)
    tensor = ((bgr[..., ::-1] - mean) / std).astype(np.float32).transpose(2, 0, 1)[None]
    (out,) = _io(isaac / "model.onnx").run(["output"], {"input": tensor})
    np.testing.assert_array_equal(out[0, 0], expected)
    tr = package_artifact(result.onnx_path, tmp_path / "tr", PackageOptions("triton")).root
    configs = sorted((tr / "model_repository").glob("*/config.pbtxt"))
    assert [p.parent.name for p in configs] == ["pem", "pem_runtime"]
    if model_config_pb2 is not None:  # the schema itself: test_every_triton_config_parses_...
        for path in configs:
            _parse_config(path)


def test_cli_package_writes_a_bundle_and_refuses_bad_input_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    artifact = _semantic_artifact(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(app, ["package", str(artifact), "--for", "deepstream", "--out", str(tmp_path / "ds")])
    assert ok.exit_code == 0, ok.output
    assert "bundle" in ok.output and (tmp_path / "ds" / deepstream.CONFIG_FILE).is_file()
    panoptic = write_artifact(tmp_path, image_panoptic_model(), head="panoptic", num_queries=3)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("the user's")
    for args, message in [
        ((str(panoptic), "--for", "isaac-ros", "--out", str(tmp_path / "i")), "panoptic artifact"),
        ((str(artifact), "--for", "gst", "--out", str(tmp_path / "g")), "--for gst"),
        ((str(tmp_path / "missing.onnx"), "--for", "triton", "--out", str(tmp_path / "m")), "missing.onnx"),
        ((str(artifact), "--for", "triton", "--out", str(taken)), "--exist-ok"),
        ((str(artifact), "--for", "deepstream", "--out", str(artifact.parent), "--exist-ok"), "input"),
    ]:
        bad = runner.invoke(app, ["package", *args])
        assert bad.exit_code == 2, bad.output
        assert bad.output.startswith("error: ") and bad.output.count("\n") == 1, bad.output
        assert message in bad.output and isinstance(bad.exception, SystemExit)  # an exit, not a crash
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("precision", "mode", "strongly_typed"), [("fp32", "0", None), ("fp16", "2", "1"), ("int8", "1", "1")]
)
def test_deepstream_precision_keys(tmp_path, precision, mode, strongly_typed):
    """network-mode follows the artifact's precision; FP16 / Q/DQ-INT8 graphs carry their own
    precisions, so nvinfer builds them strongly typed."""
    root = package_artifact(_semantic_artifact(tmp_path), tmp_path / "ds", PackageOptions("deepstream")).root
    spec = Sidecar.from_file(root / "model.json").replace(precision=precision)
    props = deepstream.nvinfer_config(spec, "model.onnx")
    deepstream.check_config(deepstream.render_config(props, "test"))
    assert props["network-mode"] == mode and props.get("strongly-typed") == strongly_typed
    assert props["model-engine-file"] == f"model.onnx_b1_gpu0_{precision}.engine"


def test_cli_export_for_refuses_an_unknown_consumer_before_exporting(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(
        app, ["export", "--preset", "cityscapes-panoptic-tiny", "--out", str(tmp_path / "x"), "--for", "gst"]
    )
    assert result.exit_code == 2 and "--for gst: choose one of triton, deepstream, isaac-ros" in result.output
    assert not (tmp_path / "x").exists()
