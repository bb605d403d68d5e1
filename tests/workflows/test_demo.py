"""`pem-deploy demo --quick`: the whole toolchain end to end on the quick default model."""

import json
from pathlib import Path

from typer.testing import CliRunner

from cli import app


def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # The user's files in the folder (issue 20: a demo deleted DIR/inputs/ and its photo):
    # --exist-ok adds the demo's files beside them and never touches them.
    (out / "inputs").mkdir(parents=True)
    (out / "inputs" / "photo.jpg").write_bytes(b"the user's photo")
    (out / "notes.md").write_text("mine")
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--exist-ok"])
    assert res.exit_code == 0, res.output
    assert (out / "inputs" / "photo.jpg").read_bytes() == b"the user's photo"
    assert (out / "notes.md").read_text() == "mine"
    assert len(list((out / "inputs").iterdir())) == 3  # the photo and the demo's 2 images
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
    # each row: the input beside its overlays, each with a caption
    inputs = sorted(p for p in (out / "inputs").iterdir() if p.name != "photo.jpg")  # the user's stays
    assert len(inputs) == 2
    for image in inputs:
        row = next(line for line in report.splitlines() if f"](inputs/{image.name})" in line)
        assert f"<br>`{image.name}`" in row and "<br>FP32" in row and "<br>INT8" in row
    # the legend lists the classes the model predicted, and names the others as not predicted
    predicted = set()
    for record in json.loads((out / "predictions" / "fp32" / "predictions.json").read_text())["predictions"]:
        predicted.update(s["category"] for s in record["segments"])
    assert f"Classes predicted on these images ({len(predicted)} of 19)" in report
    unused_line = next(line for line in report.splitlines() if line.startswith("Not predicted here"))
    assert all(name not in unused_line.split(": ", 1)[1] for name in predicted)
    results = json.loads((out / "bench.json").read_text())["results"]
    assert [r["backend"] for r in results] == ["pytorch"] + ["onnxruntime"] * 3
    stages = {"pre", "h2d", "compute", "d2h", "infer", "post", "encode"}  # CPU: copies are 0
    assert all(r["p50_ms"] > 0 and set(r["stages_ms"]) == stages for r in results)
    assert all(r["copies"] == "none" and r["stages_ms"]["h2d"] == 0.0 for r in results)
    assert (out / "bench.csv").is_file() and (out / "bench.md").is_file()
    assert "PASS" in res.output and "accuracy int8" in res.output
    # The device-side gate agrees with the demo's: verify PASSes its FP16 and INT8 artifacts.
    for precision in ("fp16", "int8"):
        verified = CliRunner().invoke(
            app,
            [
                "verify",
                str(out / "artifacts" / precision / "model.onnx"),
                "--against",
                str(out / "artifacts" / "fp32" / "model.onnx"),
            ],
        )
        assert verified.exit_code == 0, verified.output


def test_demo_rejects_a_file_as_out(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(target)])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: --out {target}: exists and is not a folder"
