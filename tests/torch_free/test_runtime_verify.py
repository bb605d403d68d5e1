"""``pem-deploy verify`` on tiny ONNX pairs built with onnx.helper (no torch): an FP16 conversion
passes against its FP32 original, a perturbed model fails, saved references round-trip, and the
policy is the one ``check`` uses."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from contract.parity_policy import POLICIES, policy_for, segment_match, segment_match_rate
from runtime.verify import VerifyError, load_reference, verify
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


def test_fp16_conversion_passes_against_fp32_and_a_perturbed_model_fails(tmp_path):
    fp32 = _artifact(tmp_path, "fp32", scored_model())
    fp16 = _artifact(tmp_path, "fp16", scored_model(fp16=True), precision="fp16")
    report = verify(fp16, against=fp32, random=1, scenes=2)
    assert report.passed, report.table()
    assert report.policy == POLICIES["fp16"]
    worst = max(s.outputs["scores"].max_abs for s in report.samples)
    assert 0 < worst < 0.02  # FP16 rounding is there, and small
    assert "PASS (fp16 policy" in report.table()
    score_rows = [line for line in report.table().splitlines() if line.split()[1:2] == ["scores"]]
    assert score_rows and all(line.rstrip().endswith("-") for line in score_rows)  # no "equal %" for floats
    broken = _artifact(tmp_path, "broken", scored_model(perturb=0.5), precision="fp16")
    failed = verify(broken, against=fp32, random=1, scenes=2)
    assert not failed.passed
    assert any(f.startswith("label agreement") for f in failed.failures)
    assert any(f.startswith("scores: max abs error") for f in failed.failures), failed.failures
    # A tolerance below the FP16 rounding fails on the scores alone (labels still agree).
    strict = verify(
        fp16, against=fp32, policy=policy_for("fp32").with_overrides(atol=worst / 2), random=1, scenes=2
    )
    assert [f.split(":")[0] for f in strict.failures] == ["scores"], strict.failures


def test_saved_reference_round_trips_without_the_reference_model(tmp_path):
    fp32 = _artifact(tmp_path, "fp32", scored_model())
    fp16 = _artifact(tmp_path, "fp16", scored_model(fp16=True), precision="fp16")
    ref_file = tmp_path / "ref.npz"
    direct = verify(fp16, against=fp32, save_reference_to=ref_file, random=2, scenes=1, seed=3)
    for p in fp32.parent.iterdir():  # the device has only the candidate and the saved outputs
        p.unlink()
    loaded = load_reference(ref_file)
    assert (
        loaded.names == ["random[0]", "random[1]", "scene[0]"] and loaded.meta["model_file"] == "model.onnx"
    )
    again = verify(fp16, load_reference_from=ref_file)
    assert again.passed and again.to_dict()["samples"] == direct.to_dict()["samples"]
    with pytest.raises(VerifyError, match="one of them"):
        verify(fp16)
    with pytest.raises(VerifyError, match="brings its own images"):
        verify(fp16, load_reference_from=ref_file, images=tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(VerifyError, match="not a readable reference"):
        verify(fp16, load_reference_from=tmp_path / "bad.npz")


def test_panoptic_segments_are_matched(tmp_path):
    ref = _artifact(tmp_path, "ref", image_panoptic_model(), head="panoptic")
    same = _artifact(tmp_path, "same", image_panoptic_model(), head="panoptic")
    report = verify(same, against=ref, random=0, scenes=3)
    assert report.passed, report.table()
    assert all(s.segment_match == 1.0 and s.segments[1] > 0 for s in report.samples)
    moved = _artifact(tmp_path, "moved", image_panoptic_model(perturb=1.0), head="panoptic")
    failed = verify(moved, against=ref, random=0, scenes=3)
    assert any("segment match" in f for f in failed.failures), failed.table()
    semantic = _artifact(tmp_path, "sem", scored_model())
    with pytest.raises(VerifyError, match="head semantic differs"):
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
    strict = runner.invoke(app, ["verify", str(fp16), "--against", str(fp32), "--atol", "0", "--rtol", "0"])
    assert strict.exit_code == 1 and "FAIL" in strict.output
    missing = runner.invoke(app, ["verify", str(fp16)])
    assert missing.exit_code == 2 and "error: give the reference" in missing.output
