"""``pem-deploy verify`` and the comparison engine on tiny ONNX pairs built with onnx.helper (no
torch): an FP16 conversion passes against its FP32 original, a perturbed model fails, NaN outputs
fail naming the output, saved references round-trip and every malformed one is one line (exit 2)."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from runtime.tools.compare import (
    POLICIES,
    ComparisonError,
    HeadSpec,
    compare_predictions,
    load_reference,
    policy_for,
    segment_match,
    segment_match_rate,
)
from runtime.tools.verify import verify
from tests.helpers.runtime_models import image_panoptic_model, write_artifact

H, W = 32, 64
_MIXING = np.eye(3, dtype=np.float32) + 0.2 * np.random.default_rng(0).standard_normal((3, 3)).astype(
    np.float32
)


def _opset(graph):
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)


def scored_model(h=H, w=W, fp16=False, perturb=0.0) -> onnx.ModelProto:
    """Semantic head with per-pixel class scores: softmax / argmax of a 1x1 conv of the image.

    ``fp16``: the same graph computed in FP16 (weights, conv, softmax), as an FP16 export is.
    """
    weights = _MIXING + perturb * np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    dtype = np.float16 if fp16 else np.float32
    inits = [numpy_helper.from_array(weights.reshape(3, 3, 1, 1).astype(dtype), "W")]
    nodes = []
    x = "images"
    if fp16:
        nodes.append(helper.make_node("Cast", ["images"], ["x16"], to=TensorProto.FLOAT16))
        x = "x16"
    nodes += [
        helper.make_node("Conv", [x, "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["idx"], axis=1, keepdims=0),
        helper.make_node("Cast", ["idx"], ["labels"], to=TensorProto.INT32),
        helper.make_node("Cast", ["probs"], ["scores"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "scored",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
        [
            helper.make_tensor_value_info("labels", TensorProto.INT32, [1, h, w]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3, h, w]),
        ],
        inits,
    )
    return _opset(graph)


def _artifact(tmp_path, name, model, head="semantic", precision="fp32"):
    folder = tmp_path / name
    folder.mkdir()
    path = write_artifact(folder, model, head=head, shape=(1, 3, H, W))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["precision"] = precision
    sidecar["input"]["normalization"] = {"mean": [128.0, 128.0, 128.0], "std": [64.0, 64.0, 64.0]}
    sidecar["panoptic"] = {"object_mask_threshold": 0.8, "overlap_threshold": 0.5}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def nan_scores(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its ``scores`` output multiplied by NaN (a broken FP16 overflow, say)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for node in model.graph.node:
        node.output[:] = ["scores_ok" if o == "scores" else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan_c"))
    model.graph.node.append(helper.make_node("Mul", ["scores_ok", "nan_c"], ["scores"]))
    return model


def test_fp16_conversion_passes_against_fp32_and_a_perturbed_model_fails(tmp_path):
    fp32 = _artifact(tmp_path, "fp32", scored_model())
    fp16 = _artifact(tmp_path, "fp16", scored_model(fp16=True), precision="fp16")
    report = verify(fp16, against=fp32)
    assert report.passed, report.table()
    assert report.policy == POLICIES["fp16"]
    assert [s.name for s in report.samples] == [f"scene[{i}]" for i in range(4)]
    assert report.roles == {"labels": "via label agreement and mIoU", "scores": "informational"}
    assert "PASS (fp16 policy" in report.table()
    score_rows = [line for line in report.table().splitlines() if line.split()[1:2] == ["scores"]]
    assert score_rows and all(line.split()[4] == "-" for line in score_rows)  # no "equal %" for floats
    broken = _artifact(tmp_path, "broken", scored_model(perturb=0.5), precision="fp16")
    failed = verify(broken, against=fp32)
    assert not failed.passed
    assert any(f.startswith("label agreement, confident") for f in failed.failures), failed.failures
    assert failed.criterion("label agreement").margin < 0


def test_noise_images_are_shown_but_never_decide(tmp_path):
    fp32 = _artifact(tmp_path, "fp32", scored_model())
    broken = _artifact(tmp_path, "broken", scored_model(perturb=0.5), precision="fp16")
    report = verify(broken, against=fp32, scenes=1, noise=2)
    assert [s.decides for s in report.samples] == [True, False, False]
    assert all(c.sample == "scene[0]" for c in report.criteria)
    assert "noise: a diagnostic only" in report.table()
    with pytest.raises(Exception, match="nothing decides the verdict"):
        verify(broken, against=fp32, scenes=0, noise=2)


def test_nan_in_an_output_fails_naming_it(tmp_path):
    ref = _artifact(tmp_path, "ref", image_panoptic_model(), head="panoptic")
    nan = _artifact(tmp_path, "nan", nan_scores(image_panoptic_model()), head="panoptic", precision="int8")
    report = verify(nan, against=ref)
    assert not report.passed
    assert report.failures[0].startswith("scores of the candidate holds NaN / Inf"), report.failures
    back = verify(ref, against=nan, policy=policy_for("int8"))  # NaN on the reference side too
    assert back.failures[0].startswith("scores of the reference holds NaN / Inf"), back.failures


def test_a_required_output_missing_on_either_side_is_one_line_error(tmp_path):
    ref = _artifact(tmp_path, "ref", image_panoptic_model(), head="panoptic")
    saved = tmp_path / "ref.npz"
    verify(ref, against=ref, save_reference_to=saved)
    reference = load_reference(saved)
    candidate = load_reference(saved)
    spec = HeadSpec("panoptic", 3, H, W)
    for pred, side in ((candidate, "candidate"), (reference, "reference")):
        for outputs in pred.outputs:
            del outputs["scores"]
        with pytest.raises(ComparisonError, match=f"^{side} model.onnx lacks output 'scores'"):
            compare_predictions(candidate, load_reference(saved) if side == "candidate" else reference, spec)
        candidate = load_reference(saved)


def test_saved_reference_round_trips_without_the_reference_model(tmp_path):
    fp32 = _artifact(tmp_path, "fp32", scored_model())
    fp16 = _artifact(tmp_path, "fp16", scored_model(fp16=True), precision="fp16")
    ref_file = tmp_path / "ref.npz"
    direct = verify(fp16, against=fp32, save_reference_to=ref_file, noise=1, scenes=2, seed=3)
    for p in fp32.parent.iterdir():  # the device has only the candidate and the saved outputs
        p.unlink()
    loaded = load_reference(ref_file)
    assert loaded.names == ["scene[0]", "scene[1]", "noise[0]"] and loaded.decides == [True, True, False]
    assert loaded.meta["model_file"] == "model.onnx"
    again = verify(fp16, load_reference_from=ref_file)
    assert again.passed and again.to_dict()["samples"] == direct.to_dict()["samples"]
    with pytest.raises(ComparisonError, match="one of them"):
        verify(fp16)
    with pytest.raises(ComparisonError, match="brings its own images"):
        verify(fp16, load_reference_from=ref_file, images=tmp_path)


def test_panoptic_segments_are_matched(tmp_path):
    ref = _artifact(tmp_path, "ref", image_panoptic_model(), head="panoptic")
    same = _artifact(tmp_path, "same", image_panoptic_model(), head="panoptic")
    report = verify(same, against=ref, scenes=3)
    assert report.passed, report.table()
    assert all(s.segment_match == 1.0 and s.segments[1] > 0 for s in report.samples)
    assert report.roles["scores"] == "relative error" and report.roles["owner"].startswith("via segment")
    moved = _artifact(tmp_path, "moved", image_panoptic_model(perturb=1.0), head="panoptic")
    failed = verify(moved, against=ref, scenes=3)
    assert any("segment match" in f for f in failed.failures), failed.table()
    semantic = _artifact(tmp_path, "sem", scored_model())
    with pytest.raises(ComparisonError, match="head semantic differs"):
        verify(semantic, against=ref)


def test_segment_matching_rule():
    ref = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    got = np.array([[1, 1, 1, 2], [1, 1, 2, 2]])  # segment 1 grew into 2: both IoU > 0.5
    assert segment_match(ref, {1: 0, 2: 5}, got, {1: 0, 2: 5}) == (2, 2, 2)
    assert segment_match(ref, {1: 0, 2: 5}, got, {1: 0, 2: 6}) == (1, 2, 2)  # class differs
    assert segment_match_rate(1, 2, 2) == 0.5 and segment_match_rate(0, 0, 0) == 1.0


def test_verify_cli_exit_codes(tmp_path):
    from cli import app

    fp32 = _artifact(tmp_path, "fp32", scored_model())
    fp16 = _artifact(tmp_path, "fp16", scored_model(fp16=True), precision="fp16")
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(fp16), "--against", str(fp32), "--json", str(tmp_path / "r.json")])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True
    broken = _artifact(tmp_path, "broken", scored_model(perturb=0.5), precision="fp16")
    failed = runner.invoke(app, ["verify", str(broken), "--against", str(fp32)])
    assert failed.exit_code == 1 and "FAIL" in failed.output, failed.output
    missing = runner.invoke(app, ["verify", str(fp16)])
    assert missing.exit_code == 2 and "error: give the reference" in missing.output
