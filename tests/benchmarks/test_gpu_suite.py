"""The GPU suite's code paths, run on the CPU at tiny sizes (``--cpu-smoke``)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"


def _suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_runs_every_section(tmp_path):
    torch.set_num_threads(1)
    suite = _suite()
    suite.main(["--cpu-smoke", "--out-dir", str(tmp_path)])
    results = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert (tmp_path / "gpu_suite.md").read_text().startswith("# GPU suite (cpu-smoke)")
    sections = results["sections"]
    assert set(sections) == {"deform_conv", "model_fps", "decoder_fps", "headline"}
    deform = sections["deform_conv"]
    if "skipped" in deform:
        assert "torchvision" in deform["skipped"]
    else:  # our deformable conv agrees with torchvision's kernel, forward and backward
        assert deform["forward"]["max_rel"] < 1e-4
        assert all(v["max_rel"] < 1e-3 for v in deform["backward"].values()), deform
    rows = sections["model_fps"]["rows"]
    assert set(rows) == {f"{p} b{b}" for p in ("r50", "stdc1", "stdc2") for b in (1, 2)}
    assert all(r["fps"] > 0 and r["ms"] > 0 for r in rows.values())
    decoder = sections["decoder_fps"]
    eager = decoder["eager"]
    assert eager["pem"]["ms"] > 0 and eager["pem_over_mask2former_mha"] > 0
    assert "CUDA" in decoder["cuda_graph"]["skipped"] and "torch.compile" in decoder["compile"]["skipped"]
    headline = sections["headline"]  # PEM R50 vs Mask2Former R50, whole model
    for backend in ("torch", "onnxruntime"):
        rows = headline[backend]
        if "skipped" in rows:
            assert backend == "onnxruntime" and "onnxruntime" in rows["skipped"]
            continue
        assert rows["pem"]["paper_fps"] == 13.8 and rows["mask2former"]["paper_fps"] == 4.1
        assert rows["pem"]["fps"] > 0 and rows["mask2former"]["fps"] > 0
        assert rows["pem_over_mask2former_time"] > 0
    assert headline["torch"]["paper_ratio"] == pytest.approx(4.1 / 13.8, abs=1e-3)
    assert not list(tmp_path.glob("*.onnx"))  # the exported graphs are removed after timing


def test_gpu_mode_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the GPU mode would run for minutes")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _suite().run_suite(tmp_path, cpu_smoke=False)
