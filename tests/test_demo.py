"""`pem-deploy demo --quick`: the whole toolchain end to end on the quick default model."""

import json
from pathlib import Path

from typer.testing import CliRunner

from cli import app


def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for precision in ("fp32", "fp16", "int8"):
        assert (out / "artifacts" / precision / "model.onnx").is_file()
        assert (out / "artifacts" / precision / "model.json").is_file()
        assert f"parity {precision}" in res.output
    assert (out / "artifacts" / "int8" / "accuracy.json").is_file()
    report = (out / "report.md").read_text()
    for section in ("## Accuracy", "## Parity", "## Latency", "## Overlays", "onnx int8", "pytorch"):
        assert section in report
    overlays = sorted((out / "predictions").rglob("overlay/*.jpg"))
    assert len(overlays) == 4  # 2 images x (fp32, int8)
    assert all(f"]({p.relative_to(out).as_posix()})" in report for p in overlays)
    results = json.loads((out / "bench.json").read_text())["results"]
    assert [r["backend"] for r in results] == ["pytorch"] + ["onnxruntime"] * 3
    stages = {"pre", "h2d", "compute", "d2h", "infer", "post", "encode"}  # CPU: copies are 0
    assert all(r["p50_ms"] > 0 and set(r["stages_ms"]) == stages for r in results)
    assert all(r["copies"] == "none" and r["stages_ms"]["h2d"] == 0.0 for r in results)
    assert (out / "bench.csv").is_file() and (out / "bench.md").is_file()
    assert "PASS" in res.output and "accuracy int8" in res.output


def test_demo_rejects_a_file_as_out(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(target)])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: --out {target}: exists and is not a folder"
