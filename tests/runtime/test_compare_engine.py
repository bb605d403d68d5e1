"""The comparison engine's policy, report and saved-reference validation (runtime.tools.compare, no torch)."""

import io
import json
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.tools.compare import POLICIES, ComparisonError, load_reference, policy_for
from runtime.tools.compare.engine import Interpretation, confident_pixels
from runtime.tools.verify import verify
from tests.helpers.runtime_models import image_panoptic_model
from tests.runtime.test_verify import H, W, _artifact


def test_policy_table_and_overrides():
    assert POLICIES["fp32"].min_confident_agreement > POLICIES["fp16"].min_confident_agreement
    assert POLICIES["fp16"].min_confident_agreement > POLICIES["int8"].min_confident_agreement
    assert policy_for("bf16") == POLICIES["fp16"]
    strict = POLICIES["int8"].with_overrides(
        max_relative_error=0.0, min_confident_agreement=1.0, min_miou=0.5
    )
    assert set(strict.max_relative_error.values()) == {0.0} and strict.min_miou == 0.5
    assert POLICIES["int8"].min_confident_agreement == 0.97  # the table itself is untouched
    with pytest.raises(ValueError, match="between 0 and 1"):
        POLICIES["fp16"].with_overrides(min_miou=1.5)
    assert "segment match" not in POLICIES["fp16"].describe("semantic")
    assert POLICIES["fp16"].boundary_px(256, 512) == 2 and POLICIES["fp16"].boundary_px(32, 64) == 1


def test_confident_pixels_leave_out_boundaries_and_near_ties():
    labels = np.zeros((8, 8), np.int32)
    labels[:, 4:] = 3
    confident = confident_pixels(Interpretation(labels), boundary_px=1, min_margin=0.1)
    assert not confident[:, 3:5].any() and confident[:, :3].all() and confident[:, 5:].all()
    scores = np.zeros((8, 8, 4), np.float32)
    scores[..., 0] = 0.6
    scores[..., 3] = 0.55  # a near tie everywhere
    scores[:2, ..., 0] = 0.9
    tied = confident_pixels(Interpretation(labels, scores=scores), boundary_px=1, min_margin=0.1)
    assert tied[:2, :3].all() and not tied[2:].any()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A valid saved reference of the panoptic test model, and its artifact."""
    tmp = tmp_path_factory.mktemp("ref")
    artifact = _artifact(tmp, "ref", image_panoptic_model(), head="panoptic")
    path = tmp / "ref.npz"
    assert verify(artifact, against=artifact, save_reference_to=path, scenes=2).passed
    return artifact, path


def _arrays(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _header(path):
    return json.loads(bytes(_arrays(path)["header"]).decode())


def _with(path, out, header=None, raw_header=None, **arrays):
    data = _arrays(path)
    if raw_header is not None:
        data["header"] = raw_header
    if header is not None:
        text = header if isinstance(header, str) else json.dumps(header)
        data["header"] = np.frombuffer(text.encode(), np.uint8)
    data.update(arrays)
    np.savez(out, **{k: v for k, v in data.items() if v is not None})
    return out


def _malformed(path, tmp):
    """(case, file) pairs: every way a reference file can be wrong."""
    good = path.read_bytes()
    header = _header(path)
    owner = _arrays(path)["output/owner"]
    cases = {}
    (tmp / "truncated.npz").write_bytes(good[: len(good) // 2])
    cases["truncated npz"] = tmp / "truncated.npz"
    (tmp / "empty.npz").write_bytes(b"")
    cases["0-byte file"] = tmp / "empty.npz"
    np.save(tmp / "array.npy", np.zeros(3))
    cases["a .npy"] = tmp / "array.npy"
    (tmp / "text.npz").write_text("not a zip")
    cases["not a zip"] = tmp / "text.npz"
    cases["header a list"] = _with(path, tmp / "list.npz", header=[1, 2])
    cases["header lacks meta"] = _with(
        path, tmp / "nometa.npz", header={k: v for k, v in header.items() if k != "meta"}
    )
    cases["header nested 50,000 deep"] = _with(path, tmp / "deep.npz", header="[" * 50_000 + "]" * 50_000)
    cases["header not JSON"] = _with(path, tmp / "notjson.npz", header="{oops")
    cases["header not uint8"] = _with(path, tmp / "hdrtype.npz", raw_header=np.zeros(4, np.float32))
    cases["names of wrong type"] = _with(path, tmp / "names_type.npz", header={**header, "names": [1, 2]})
    cases["names a string"] = _with(path, tmp / "names_str.npz", header={**header, "names": "scene"})
    cases["names of wrong count"] = _with(
        path, tmp / "names_count.npz", header={**header, "names": ["a", "b", "c"]}
    )
    cases["meta of wrong type"] = _with(
        path, tmp / "meta_type.npz", header={**header, "meta": {**header["meta"], "input_size": "32x64"}}
    )
    cases["unknown version"] = _with(path, tmp / "version.npz", header={**header, "version": 99})
    cases["label map of wrong shape"] = _with(
        path, tmp / "owner_shape.npz", **{"output/owner": owner[:, :, :-1]}
    )
    cases["label map of wrong rank"] = _with(path, tmp / "owner_rank.npz", **{"output/owner": owner[:, 0]})
    cases["output of wrong dtype"] = _with(
        path, tmp / "owner_dtype.npz", **{"output/owner": owner.astype(np.float32)}
    )
    cases["missing output"] = _with(path, tmp / "no_scores.npz", **{"output/scores": None})
    cases["images of wrong shape"] = _with(path, tmp / "images.npz", images=np.zeros((2, H, W), np.uint8))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("header.npy", b"x")
        archive.writestr("evil.pkl", b"cos\nsystem\n(S'echo hi'\ntR.")
    (tmp / "pickle.npz").write_bytes(buffer.getvalue())
    cases["a pickle member"] = tmp / "pickle.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp / "objects.npz", "w") as archive:
        archive.writestr("header.npy", buffer.getvalue())
        archive.writestr("images.npy", buffer.getvalue())
    cases["object arrays (pickle)"] = tmp / "objects.npz"
    return cases


def test_every_malformed_reference_is_one_line_exit_2(saved, tmp_path):
    from cli import app

    artifact, path = saved
    cases = _malformed(path, tmp_path)
    assert len(cases) >= 20
    runner = CliRunner()
    for case, file in cases.items():
        with pytest.raises(ComparisonError) as info:
            load_reference(file)
        message = str(info.value)
        assert str(file) in message and "\n" not in message, (case, message)
        result = runner.invoke(app, ["verify", str(artifact), "--load-reference", str(file)])
        assert result.exit_code == 2, (case, result.output)
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, (case, result.output)
        assert "Traceback" not in result.output


def test_a_good_reference_passes_and_a_fail_is_exit_1(saved, tmp_path):
    from cli import app

    artifact, path = saved
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(artifact), "--load-reference", str(path)])
    assert ok.exit_code == 0, ok.output
    moved = _artifact(tmp_path, "moved", image_panoptic_model(perturb=1.0), head="panoptic")
    failed = runner.invoke(app, ["verify", str(moved), "--load-reference", str(path)])
    assert failed.exit_code == 1 and "FAIL" in failed.output.splitlines()[-1]


def test_report_columns_stay_apart_for_long_image_names(saved, tmp_path):
    artifact, _ = saved
    folder = tmp_path / "images"
    folder.mkdir()
    import cv2

    name = "frankfurt_000000_000294_leftImg8bit_with_a_very_long_name.png"
    cv2.imwrite(str(folder / name), np.full((H, W, 3), 90, np.uint8))
    report = verify(artifact, against=artifact, images=folder, scenes=1)
    rows = [r for r in report.table().splitlines() if name in r]
    assert rows and all(r.startswith(f"  {name}  ") for r in rows)
    owner = next(r for r in rows if " owner " in r)
    assert "(index)" in owner and "via segment match" in owner


def test_layerwise_names_the_first_node_that_breaks(tmp_path):
    from cli import app
    from runtime.tools.compare.layerwise import compare_layers
    from tests.runtime.test_verify import nan_scores, scored_model

    fp32 = _artifact(tmp_path, "fp32", scored_model())
    fp16 = _artifact(tmp_path, "fp16", scored_model(fp16=True), precision="fp16")
    healthy = compare_layers(fp16, against=fp32, policy=policy_for("fp16"))
    assert healthy.first_bad is None and len(healthy.layers) >= 2, healthy.table()
    assert "no shared tensor passes the tolerance" in healthy.table()
    broken = _artifact(tmp_path, "broken", scored_model(perturb=0.5), precision="fp16")
    report = compare_layers(broken, against=fp32, policy=policy_for("fp16"))
    assert report.first_bad is not None and report.first_bad.tensor == "logits", report.table()
    assert report.layers[0].tensor == "logits"  # graph order
    assert "first divergence: node" in report.table()
    ref = _artifact(tmp_path, "pan", image_panoptic_model(), head="panoptic")
    nan = _artifact(tmp_path, "nan", nan_scores(image_panoptic_model()), head="panoptic")
    at_nan = compare_layers(nan, against=ref)
    assert at_nan.first_bad.tensor == "scores" and at_nan.first_bad.non_finite > 0, at_nan.table()
    result = CliRunner().invoke(app, ["verify", str(broken), "--against", str(fp32), "--layerwise"])
    assert result.exit_code == 1 and "first divergence: node" in result.output, result.output
    saved = tmp_path / "ref.npz"
    verify(fp32, against=fp32, save_reference_to=saved)
    refused = CliRunner().invoke(app, ["verify", str(fp16), "--load-reference", str(saved), "--layerwise"])
    assert refused.exit_code == 2 and "--layerwise needs --against" in refused.output


def test_miou_leaves_out_classes_of_a_few_pixels():
    from runtime.tools.compare import mean_iou

    ref = np.zeros((100, 100), np.int32)
    ref[:, 50:] = 1
    got = ref.copy()
    got[0, 0] = 7  # one stray pixel of a class the reference never predicts
    assert mean_iou(got, ref) < 0.7  # all or nothing: the stray class alone drags the mean
    assert mean_iou(got, ref, min_share=0.01) > 0.999
    got[:, :50] = 2  # a class covering half the image, wrong: counts
    assert mean_iou(got, ref, min_share=0.01) < 0.5
