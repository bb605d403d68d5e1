"""NaN / Inf in a model's outputs and out-of-range camera indices (issue 20).

A panoptic model whose ``scores`` are NaN used to give 0 segments and exit 0 (every comparison
with NaN is false); a raw model's NaN logits gave an arbitrary label map. Now the API raises a
typed :class:`NonFiniteOutputError` naming the image and the output, on every path (predict,
predict_batch, stream), and ``infer`` prints one line and exits 2 without writing results.
A camera index OpenCV cannot take (it crashed on indices over 2**31) is one line too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from runtime import Segmenter
from runtime.errors import NonFiniteOutputError, PemDeployError
from runtime.io.sources import MAX_CAMERA_INDEX, CameraError, camera_spec
from tests.helpers.runtime_models import K, constant_model, scene, write_artifact

RUNNER = CliRunner()
H, W, Q = 32, 64, 2


def _panoptic(folder: Path, scores: list[float]) -> Path:
    owner = np.zeros((1, H, W), np.int32)
    owner[:, :, 40:] = 1
    consts = {
        "scores": np.array([scores], np.float32),
        "classes": np.array([[0, 2]], np.int32),
        "owner": owner,
        "owner_fg": np.ones((1, H, W), np.uint8),
        "mask_area": np.array([[40 * H, 24 * H]], np.int32),
    }
    folder.mkdir(parents=True, exist_ok=True)
    return write_artifact(folder, constant_model(consts, H, W), head="panoptic")


def _raw(folder: Path, poison: str | None, value: float = np.nan) -> Path:
    rng = np.random.default_rng(0)
    consts = {
        "pred_logits": rng.standard_normal((1, Q, K + 1)).astype(np.float32),
        "pred_masks": rng.standard_normal((1, Q, H // 4, W // 4)).astype(np.float32),
    }
    if poison is not None:
        consts[poison].reshape(-1)[3] = value
    folder.mkdir(parents=True, exist_ok=True)
    return write_artifact(folder, constant_model(consts, H, W), head="raw", num_queries=Q)


CASES: dict[str, tuple[Any, str, str]] = {
    "panoptic-scores-nan": (lambda d: _panoptic(d, [float("nan"), 0.9]), "scores", "1 of 2 values"),
    "panoptic-scores-all-nan": (lambda d: _panoptic(d, [float("nan")] * 2), "scores", "2 of 2 values"),
    "panoptic-scores-inf": (lambda d: _panoptic(d, [float("inf"), 0.9]), "scores", "1 of 2 values"),
    "panoptic-scores-minus-inf": (lambda d: _panoptic(d, [0.95, -float("inf")]), "scores", "1 of 2"),
    "raw-logits-nan": (lambda d: _raw(d, "pred_logits"), "pred_logits", "1 of 8 values"),
    "raw-masks-nan": (lambda d: _raw(d, "pred_masks"), "pred_masks", "1 of 256 values"),
    "raw-masks-inf": (lambda d: _raw(d, "pred_masks", np.inf), "pred_masks", "1 of 256 values"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_api_refuses_non_finite_outputs_on_every_path(case, tmp_path):
    make, output, count = CASES[case]
    with Segmenter.open(make(tmp_path)) as seg:
        with pytest.raises(NonFiniteOutputError) as info:
            seg.predict(scene(), "street.png")
        message = str(info.value)
        assert isinstance(info.value, PemDeployError) and "\n" not in message
        assert (
            message.startswith("street.png: model output ") and repr(output) in message and count in message
        )
        with pytest.raises(NonFiniteOutputError, match=r"^a\.png: model output"):
            seg.predict_batch([scene(), scene()], ["a.png", "b.png"])
        with pytest.raises(NonFiniteOutputError, match=r"^frame 0: model output"):
            list(seg.stream([scene(), scene()]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_infer_exits_2_in_one_line_and_writes_no_result(case, tmp_path):
    make, output, _ = CASES[case]
    model = make(tmp_path / "model")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "street.png"), scene())
    out = tmp_path / "out"
    result = RUNNER.invoke(app, ["infer", str(model), str(images), "--out", str(out)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: ") and repr(output) in lines[0], result.output
    assert "street.png" in lines[0]
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not [p for p in written if p.suffix in (".png", ".json")], written


def test_finite_outputs_still_pass(tmp_path):
    with Segmenter.open(_panoptic(tmp_path / "p", [0.95, 0.9])) as seg:
        assert len(seg.predict(scene(H, W)).segments) == 2
    with Segmenter.open(_raw(tmp_path / "r", None)) as seg:
        assert seg.predict(scene(H, W)).labels.shape == (H, W)


# -- camera indices ---------------------------------------------------------------------------

CAMERA_REFUSED = {
    "2147483648": "camera index 2147483648 is out of range",
    "99999999999999999999999": "is out of range (0 to 1023)",
    str(MAX_CAMERA_INDEX + 1): f"camera index {MAX_CAMERA_INDEX + 1} is out of range",
    "/dev/video99999999999": "camera index 99999999999 is out of range",
    "\u00b2": "written with the digits 0-9",  # superscript two: isdigit() but not int()
    "\u0663": "written with the digits 0-9",  # Arabic-Indic three
}


@pytest.mark.parametrize("source", sorted(CAMERA_REFUSED))
def test_camera_index_out_of_range_is_one_line(source, tmp_path):
    with pytest.raises(CameraError, match=CAMERA_REFUSED[source].replace("(", r"\(").replace(")", r"\)")):
        camera_spec(source)
    model = _panoptic(tmp_path / "m", [0.95, 0.9])
    result = RUNNER.invoke(
        app, ["infer", str(model), source, "--out", str(tmp_path / "out"), "--max-frames", "1"]
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert not (tmp_path / "out").exists()


def test_camera_indices_in_range_are_kept():
    assert camera_spec("0").target == 0 and camera_spec(str(MAX_CAMERA_INDEX)).target == MAX_CAMERA_INDEX
