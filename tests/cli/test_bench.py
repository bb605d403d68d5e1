"""`runtime.tools.bench` statistics and reports; `pem-deploy bench` on a tiny ONNX artifact and a preset."""

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from contract.output import MANIFEST_NAME
from runtime.core.backends.base import Backend
from runtime.tools.bench import (
    BenchError,
    bench_artifact,
    format_table,
    parse_shape,
    summarize,
    write_reports,
)


def _artifact(folder: Path, h: int = 32, w: int = 64) -> Path:
    """A tiny semantic artifact (argmax over a 1x1 identity conv) built like the runtime tests do."""
    from tests.helpers.runtime_models import semantic_model, write_artifact

    folder.mkdir(parents=True, exist_ok=True)
    return write_artifact(folder, semantic_model(h, w), shape=(1, 3, h, w))


def _summary(times_ms: list, **fields: Any) -> Any:
    """``summarize`` of ``times_ms`` for a small CPU FP32 run, with ``fields`` changed."""
    defaults = dict(name="x", backend="onnxruntime", precision="fp32", device="cpu", shape=(8, 16), batch=2)
    return summarize(times_ms, **{**defaults, "warmup": 0, **fields})


def test_summarize_percentiles() -> None:
    r = _summary(list(range(1, 101)), stages_ms={"pre": [1.0, 3.0], "infer": [4.0], "post": []})
    assert r.mean_ms == pytest.approx(50.5)
    assert r.p50_ms == pytest.approx(50.5)
    assert r.p90_ms == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert r.p99_ms == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert r.fps == pytest.approx(1000 / 50.5)
    assert r.throughput == pytest.approx(2 * 1000 / 50.5)
    assert r.stages_ms == {"pre": 2.0, "infer": 4.0}
    with pytest.raises(BenchError, match="iterations"):
        summarize([], name="x", backend="b", precision="p", device="cpu", shape=(1, 1), batch=1, warmup=0)


def test_parse_shape() -> None:
    assert parse_shape("256x512") == (256, 512)
    with pytest.raises(BenchError, match="--shape 12"):
        parse_shape("12")


def test_bench_artifact_and_reports(tmp_path: Path) -> None:
    path = _artifact(tmp_path / "a")
    r = bench_artifact(path, warmup=1, iterations=4, name="tiny")
    assert r.iterations == 4 and r.backend == "onnxruntime" and r.shape == (32, 64)
    assert set(r.stages_ms) == {"pre", "h2d", "compute", "d2h", "infer", "post", "encode"}
    assert r.peak_memory_mb and r.peak_memory_mb > 0
    # CPU provider: no copies, said so (0, with the note), not left blank.
    assert r.copies == "none" and r.stages_ms["h2d"] == r.stages_ms["d2h"] == 0.0
    assert r.stages_ms["compute"] > 0 and r.stages_ms["encode"] > 0
    assert r.stages_ms["compute"] <= r.stages_ms["infer"] + 1e-6
    assert r.versions["onnxruntime"] and "CPUExecutionProvider" in r.versions["onnxruntime_providers"]
    assert r.p50_ms <= r.p90_ms <= r.p99_ms
    r2 = bench_artifact(tmp_path / "a", shape=(64, 128), batch=2, warmup=0, iterations=2)
    assert r2.shape == (64, 128) and r2.batch == 2
    table = format_table([r, r2])
    assert "tiny" in table and "p99 ms" in table and "encode ms/img" in table
    assert "h2d / d2h (none): 0: the backend runs in host memory" in table
    paths, note = write_reports([r, r2], tmp_path / "out", plot=True)
    assert note is None or "matplotlib" in note
    assert all(p.is_file() for p in paths)
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert [x["name"] for x in data["results"]] == ["tiny", r2.name]
    rows = list(csv.DictReader((tmp_path / "out" / "bench.csv").open()))
    assert float(rows[0]["p50_ms"]) == pytest.approx(r.p50_ms) and "infer_ms" in rows[0]
    assert float(rows[0]["h2d_ms"]) == 0.0 and rows[0]["copies"] == "none"
    assert data["results"][0]["versions"]["onnxruntime"]
    assert "| artifact |" in (tmp_path / "out" / "bench.md").read_text()
    hidden = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert hidden == [MANIFEST_NAME]  # the record of what pem-deploy wrote; no temp files left


def test_cli_bench(tmp_path: Path) -> None:
    path = _artifact(tmp_path / "a")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "bench",
            str(path),
            "--preset",
            "cityscapes-semantic-tiny",
            "--shape",
            "64x128",
            "--warmup",
            "0",
            "--iterations",
            "2",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "pytorch" in res.output and "onnxruntime" in res.output
    assert (tmp_path / "o" / "bench.csv").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["missing.onnx"], "missing.onnx: no such"),
        (["--preset", "nope"], "nope"),
        (["--preset", "cityscapes-semantic-tiny", "--iterations", "0"], "--iterations 0"),
        (["--preset", "cityscapes-semantic-tiny", "--shape", "axb"], "--shape axb"),
        ([], "give one or more"),
    ],
)
def test_cli_bench_errors(args: list[str], needle: str) -> None:
    res = CliRunner().invoke(app, ["bench", *args])
    assert res.exit_code == 2
    assert "error:" in res.output and needle in res.output
    assert len(res.output.strip().splitlines()) == 1


class _DeviceBackend(Backend):
    """A backend whose copies it cannot separate (not host memory), for the default split."""

    name = "fake-device"

    def __init__(self) -> None:
        self._inputs, self._outputs = [], []

    def infer(self, inputs):
        return {"y": inputs["x"] * 2}


def test_default_split_leaves_copies_inside_compute_and_the_table_says_so() -> None:
    backend = _DeviceBackend()
    outputs, split = backend.infer_timed({"x": np.ones(3)})
    assert outputs["y"].tolist() == [2.0, 2.0, 2.0]
    assert set(split) == {"compute"} and split["compute"] >= 0 and backend.copy_timing == "inside compute"
    r = _summary(
        [5.0],
        name="dev",
        backend="fake-device",
        device="gpu",
        shape=(8, 8),
        batch=1,
        stages_ms={"pre": [1.0], "compute": [3.0], "post": [1.0]},
        copies=backend.copy_timing,
    )
    table = format_table([r])
    assert "in compute" in table and "h2d / d2h (inside compute): not separable" in table
