"""The OpenVINO backend: FP32, torch-free, same labels as onnxruntime on a decomposed export."""

import json
import shutil

import numpy as np
import pytest

from export.pipeline import ExportOptions, export_artifact
from export.source import load_source
from pem.zoo import ensure_default_checkpoint
from runtime import ArtifactError, Segmenter

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The decomposed semantic export of the trained quick model at 96x192, and a copy whose
    sidecar says it has native DeformConv (the model file, and so its checksum, unchanged)."""
    source = load_source(checkpoint=ensure_default_checkpoint("quick"), height=96, width=192)
    root = tmp_path_factory.mktemp("ov")
    options = ExportOptions(
        out_dir=root / "decomposed",
        head="semantic",
        deform_impl="decomposed",
        exporter="torchscript",  # the fast exporter; the dynamo one takes ~10x longer here
        simplifier="none",
    )
    decomposed = export_artifact(source, options).onnx_path
    native = root / "native"
    native.mkdir()
    shutil.copy(decomposed, native / decomposed.name)
    sidecar = json.loads(decomposed.with_suffix(".json").read_text())
    sidecar["onnx"]["deform_impl"] = "native"
    sidecar["onnx"]["op_counts"]["DeformConv"] = 1
    (native / "model.json").write_text(json.dumps(sidecar))
    return {"decomposed": decomposed, "native": native / decomposed.name}


def _deform_conv_model(path):
    """A bare ONNX file with one DeformConv-19 node."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], kernel_shape=[1, 1])],
        "deform",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 1, 1, 1]),
            helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 2, 4, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    return path


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):  # smooth blobs: segment-like structure, not pure noise
        small = rng.integers(0, 256, (6, 12, 3), dtype=np.uint8)
        frames.append(np.ascontiguousarray(np.kron(small, np.ones((16, 16, 1), np.uint8))))
    return frames


def test_openvino_labels_equal_onnxruntime(exports):
    frames = _frames(3)
    with (
        Segmenter.open(exports["decomposed"], threads=1) as ort_seg,
        Segmenter.open(exports["decomposed"], threads=1, backend="openvino") as ov_seg,
    ):
        assert ov_seg.backend.name == "openvino"
        assert ov_seg.backend.inference_precision == "f32"  # never bf16
        assert [s.name for s in ov_seg.backend.outputs] == [s.name for s in ort_seg.backend.outputs]
        for frame in frames:
            a, b = ort_seg.predict(frame).labels, ov_seg.predict(frame).labels
            assert a.shape == b.shape == frame.shape[:2]
            assert np.array_equal(a, b), f"{(a != b).mean():.4%} of the labels differ"


def test_openvino_refuses_native_deform_conv_in_one_line(exports):
    with pytest.raises(ArtifactError, match="--deform-impl decomposed") as info:
        Segmenter.open(exports["native"], backend="openvino")
    assert "\n" not in str(info.value)


def test_openvino_backend_refuses_a_bare_deform_conv_file(tmp_path):
    from runtime.core.backends.openvino_backend import OpenVINOBackend

    with pytest.raises(ArtifactError, match="DeformConv; export with --deform-impl decomposed") as info:
        OpenVINOBackend(_deform_conv_model(tmp_path / "d.onnx"))
    assert "\n" not in str(info.value)


def test_backend_choice_is_checked(exports):
    with pytest.raises(ArtifactError, match="--backend cpu: choose one of"):
        Segmenter.open(exports["decomposed"], backend="cpu")
    with pytest.raises(ArtifactError, match="cannot run it"):
        Segmenter.open(exports["decomposed"], backend="tensorrt")


def test_bench_and_infer_take_the_backend(exports, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    path = str(exports["decomposed"])
    args = ["bench", path, "--backend", "onnxruntime", "--backend", "openvino", "--iterations", "2"]
    result = CliRunner().invoke(app, [*args, "--warmup", "1", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())
    rows = rows["results"] if isinstance(rows, dict) else rows
    assert [r["backend"] for r in rows] == ["onnxruntime", "openvino"]
    image = tmp_path / "frame.png"
    import cv2

    cv2.imwrite(str(image), _frames(1)[0])
    result = CliRunner().invoke(
        app, ["infer", path, str(image), "--out", str(tmp_path / "i"), "--backend", "openvino"]
    )
    assert result.exit_code == 0, result.output
