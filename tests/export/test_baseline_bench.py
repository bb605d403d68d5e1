"""`pem-deploy bench --preset ... --baseline mask2former-r50`: PEM vs Mask2Former, whole model."""

import json

import pytest
from typer.testing import CliRunner

from cli import app
from export.baseline_bench import compare_with_baseline
from export.errors import ExportError


def test_bench_baseline_prints_and_writes_the_headline(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "report"
    args = ["bench", "--preset", "cityscapes-panoptic-r50", "--baseline", "mask2former-r50"]
    args += ["--shape", "64x128", "--rounds", "2", "--warmup", "0", "--iterations", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| time, torch |" in result.output and "| time, onnxruntime |" in result.output
    assert "0.30 (FPS)" in result.output  # the paper's Mask2Former / PEM FPS ratio, panoptic
    (report,) = json.loads((out / "baseline.json").read_text())
    assert report["models"] == [
        "pem cityscapes-panoptic-r50",
        "mask2former-r50 (cityscapes-panoptic-r50)",
        "pem cityscapes-panoptic-stdc1",
    ]
    assert len(report["timings"]) == 3 * 2 * 2  # models x backends x rounds
    assert all(t["times_ms"][0] > 0 for t in report["timings"])
    assert report["paper_flop_ratio"] == pytest.approx(237 / 519)
    assert 0.3 < report["flop_ratio"] < 0.7  # counted at 64x128
    for backend in ("torch", "onnxruntime"):
        assert len(report["time_ratios"][backend]) == 2 and all(r > 0 for r in report["time_ratios"][backend])
    assert report["machine"]["onnxruntime"] and report["machine"]["cores"] >= 1
    assert (out / "baseline.md").read_text().startswith("pem cityscapes-panoptic-r50 vs mask2former-r50")


def test_bench_baseline_bad_input_is_one_line():
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--preset", "cityscapes-panoptic-r50", "--baseline", "segformer"])
    assert result.exit_code == 2 and "--baseline segformer" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["bench", "--baseline", "mask2former-r50"])
    assert result.exit_code == 2 and "give --preset" in result.output
    args = ["bench", "--preset", "cityscapes-panoptic-r50", "--baseline", "mask2former-r50"]
    result = runner.invoke(app, [*args, "--backend", "openvino"])
    assert result.exit_code == 2 and "backend openvino: choose from torch, onnxruntime" in result.output
    result = runner.invoke(app, [*args, "--shape", "32000x32000"])  # refused before any model is built
    assert result.exit_code == 2 and "needs about" in result.output and "GiB" in result.output


def test_semantic_preset_uses_the_semantic_paper_ratio():
    result = compare_with_baseline(
        "cityscapes-semantic-r50", shape=(64, 64), rounds=1, warmup=0, iterations=1, backends=("torch",)
    )
    assert result.paper_fps_ratio == pytest.approx(6.6 / 13.8)
    assert result.paper_flop_ratio == pytest.approx(240 / 523)
    assert result.time_ratio("torch", 1) > 0 and result.time_ratio("onnxruntime", 1) is None
    with pytest.raises(ExportError, match="--shape 60x64"):
        compare_with_baseline("cityscapes-semantic-r50", shape=(60, 64), backends=("torch",))
