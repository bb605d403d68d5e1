"""Calibration of the trained quick model: Q/DQ placement, caches and reuse, accuracy, the CLI."""

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from calib.accuracy import (
    accuracy_report,
    evaluate_onnx,
    layer_sensitivity,
    open_eval_dataset,
    report_markdown,
)
from calib.calibrate import CalibrationConfig, Int8Calibrator, calibrate_ranges, input_format
from calib.errors import CalibrationError
from calib.graph import FLOAT_ONLY_OPS, check_qdq, dequantized_consumers, find_targets
from calib.quantize import quantize_model
from calib.trt_cache import read_cache
from cli import app
from contract.output import MANIFEST_NAME
from export.pipeline import ExportOptions, export_graph
from export.source import load_source
from pem.zoo import default_dataset_path, ensure_default_checkpoint

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def quick():
    """(checkpoint, dataset folder, source, raw FP32 graph) of the quick zoo model at 256x512."""
    checkpoint = ensure_default_checkpoint("quick")
    data = default_dataset_path("quick")
    source = load_source(checkpoint=checkpoint)
    raw, _, _ = export_graph(source, ExportOptions(head="raw"))
    return checkpoint, data, source, raw


@pytest.fixture(scope="module")
def ranges(quick, tmp_path_factory):
    _, data, _, raw = quick
    config = CalibrationConfig(data=data, num_images=4, cache_dir=tmp_path_factory.mktemp("cache"))
    return config, calibrate_ranges(raw, config, input_format(raw))


def test_int8_region_is_backbone_and_pixel_decoder(quick):
    raw = quick[3]
    targets = find_targets(raw)
    parts = {t.part for t in targets}
    assert parts == {"backbone", "pixel_decoder"}
    assert sum(t.op_type == "Conv" for t in targets) >= 30
    assert {t.axis for t in targets if t.op_type == "ConvTranspose"} == {1}
    by_name = {n.name: n for n in raw.graph.node}
    for t in targets:  # nothing of the transformer decoder (predictor) is quantised
        assert not any("predictor" in name for name in by_name[t.node].input)
    predictor_convs = [
        n for n in raw.graph.node if n.op_type == "Conv" and any("predictor" in i for i in n.input)
    ]
    assert predictor_convs and not {n.name for n in predictor_convs} & {t.node for t in targets}


@pytest.mark.parametrize("layout", ["tensorrt", "onnxruntime"])
def test_no_qdq_feeds_the_float_path(quick, ranges, layout):
    raw = quick[3]
    quantized = quantize_model(raw, ranges[1].scales(), layout=layout)
    assert check_qdq(quantized, layout) == []
    consumers = dequantized_consumers(quantized)
    assert not [n for n in consumers if n.op_type in FLOAT_ONLY_OPS]
    # the PEM-CA similarity / mask MatMuls have no constant weight: never quantised
    assert not [n for n in consumers if n.op_type == "MatMul"]
    if layout == "tensorrt":
        assert {n.op_type for n in consumers} <= {"Conv", "ConvTranspose", "Gemm"}
    ops = [n.op_type for n in quantized.graph.node]
    for op in ("DeformConv", "LayerNormalization", "Softmax", "ReduceL2", "ArgMax"):
        assert op in ops
    onnx.checker.check_model(quantized)


def test_cache_is_written_parsed_and_reused(quick, ranges):
    _, data, _, raw = quick
    config, first = ranges
    assert not first.reused and first.cache_path is not None and first.cache_path.is_file()
    parsed = read_cache(first.cache_path)
    assert parsed.scales == first.cache.scales and "images" in parsed.scales
    text = first.cache_path.read_text().splitlines()
    assert text[0] == "TRT-100300-EntropyCalibration2"
    second = calibrate_ranges(raw, config, input_format(raw))
    assert second.reused and second.cache.scales == first.cache.scales
    # an explicit cache file is reused as is
    explicit = calibrate_ranges(
        raw, CalibrationConfig(data=data, cache_file=first.cache_path), input_format(raw)
    )
    assert explicit.reused and explicit.amax == parsed.amax()
    # another method is another cache
    other = calibrate_ranges(
        raw,
        CalibrationConfig(data=data, num_images=4, method="minmax", cache_dir=config.cache_dir),
        input_format(raw),
    )
    assert not other.reused and other.cache_path != first.cache_path


def test_foreign_cache_is_refused(quick, tmp_path):
    _, data, _, raw = quick
    foreign = tmp_path / "foreign.cache"
    foreign.write_text("TRT-100300-EntropyCalibration2\nsomething: 3c000000\n")
    with pytest.raises(CalibrationError, match=r"foreign.cache: no scale for .* another model"):
        calibrate_ranges(raw, CalibrationConfig(data=data, cache_file=foreign), input_format(raw))


def test_int8_runs_and_matches_fp32(quick, ranges):
    _, data, source, raw = quick
    quantized = quantize_model(raw, ranges[1].scales())
    fmt = input_format(raw)
    dataset = open_eval_dataset(data, "val", source.config)
    results = {
        "fp32": evaluate_onnx(raw, source.config, fmt, dataset, limit=3),
        "int8": evaluate_onnx(quantized, source.config, fmt, dataset, limit=3),
    }
    report = accuracy_report(results)
    assert abs(report["precisions"]["int8"]["mIoU_drop"]) < 5.0
    assert "PQ" in report["precisions"]["int8"] and "per_class" in report["precisions"]["int8"]
    markdown = report_markdown(report)
    assert "| int8 |" in markdown and "dIoU / dPQ" in markdown


def test_onnxruntime_layout_runs_the_pixel_decoder_in_int8(quick, tmp_path):
    _, data, source, raw = quick
    config = CalibrationConfig(data=data, num_images=4, cache_dir=tmp_path / "cache")
    calibrator = Int8Calibrator(config, layout="onnxruntime")
    quantized = calibrator(raw)
    ops = [n.op_type for n in quantized.graph.node]
    # the three up-samplers are sub-pixel convs now; everything float-only stays float
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 3
    assert check_qdq(quantized, "onnxruntime") == []
    assert not [n for n in dequantized_consumers(quantized) if n.op_type in FLOAT_ONLY_OPS]
    # onnxruntime fuses every quantised conv but the float RGB stem into QLinearConv
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    convs = [t for t in calibrator.result.targets if t.op_type == "Conv"]
    assert optimized.count("QLinearConv") == len(convs) - 1
    fmt = input_format(raw)
    dataset = open_eval_dataset(data, "val", source.config)
    results = {
        "fp32": evaluate_onnx(raw, source.config, fmt, dataset, limit=3),
        "int8": evaluate_onnx(quantized, source.config, fmt, dataset, limit=3),
    }
    assert abs(accuracy_report(results)["precisions"]["int8"]["mIoU_drop"]) < 5.0


def test_sensitivity_ranks_nodes(quick, ranges):
    raw = quick[3]
    targets = find_targets(raw)[:3]
    x = np.zeros((1, 3, 256, 512), np.float32)
    sens = layer_sensitivity(raw, ranges[1].scales(), targets, [x])
    assert set(sens) == {t.node for t in targets}
    assert list(sens.values()) == sorted(sens.values(), reverse=True)


def test_int8_calibrator_validates():
    with pytest.raises(CalibrationError, match="--max-drop"):
        Int8Calibrator(CalibrationConfig(), max_drop=-1)
    with pytest.raises(CalibrationError, match="--calib-method"):
        Int8Calibrator(CalibrationConfig(method="mse"))  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match="--target"):
        Int8Calibrator(CalibrationConfig(), layout="fast")


def test_cli_calibrate_end_to_end(quick, tmp_path):
    checkpoint, data, _, _ = quick
    out = tmp_path / "int8"
    args = ["calibrate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]
    args += ["--calib-images", "4", "--eval-limit", "3", "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST_NAME,  # the record of what pem-deploy wrote
        "accuracy.json",
        "accuracy.md",
        "model.cache",
        "model.json",
        "model.onnx",
    ]
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["precision"] == "int8"
    assert sidecar["int8"]["target"] == "onnxruntime"  # the default: the CPU runtime's fast layout
    report = json.loads((out / "accuracy.json").read_text())
    assert set(report["precisions"]) == {"fp32", "fp16", "int8"}
    assert report["calibration"]["images"] == 4 and report["calibration"]["method"] == "percentile"
    assert report["calibration"]["layout"] == "onnxruntime"
    # The same engine and policy as check / verify judge FP16 and INT8 against FP32.
    assert set(report["parity"]) == {"fp16", "int8"}
    assert report["parity"]["fp16"]["passed"], report["parity"]["fp16"]["failures"]
    assert "Parity vs fp32" in (out / "accuracy.md").read_text()
    assert read_cache(out / "model.cache").scales
    assert "mIoU" in result.output and "trt cache" in result.output

    from runtime import Segmenter

    with Segmenter.open(out) as segmenter:
        image = np.zeros((256, 512, 3), np.uint8)
        assert segmenter.predict(image).labels.shape == (256, 512)

    # second run: the calibration cache is reused
    again = CliRunner().invoke(app, [*args[:6], str(tmp_path / "again"), *args[7:], "--no-report"])
    assert again.exit_code == 0, again.output
    assert "reused cache" in again.output


def test_cli_export_int8(quick, tmp_path):
    checkpoint, data, _, _ = quick
    out = tmp_path / "e"
    base = [
        "export",
        "--checkpoint",
        str(checkpoint),
        "--precision",
        "int8",
        "--head",
        "raw",
        "--out",
        str(out),
    ]
    bad = CliRunner().invoke(app, [*base, "--calib-data", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "nowhere: no such folder" in bad.output and not out.exists()
    ok = CliRunner().invoke(app, [*base, "--calib-data", str(data), "--calib-images", "2"])
    assert ok.exit_code == 0, ok.output
    model = onnx.load(out / "model.onnx")
    assert "QuantizeLinear" in {n.op_type for n in model.graph.node}
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["precision"] == "int8" and sidecar["int8"]["target"] == "onnxruntime"
    assert "DepthToSpace" in {n.op_type for n in model.graph.node}  # the onnxruntime layout's up-samplers
    assert "TensorRT cache" in ok.output
    trt = CliRunner().invoke(
        app,
        [
            *base[:-1],
            str(tmp_path / "t"),
            "--calib-data",
            str(data),
            "--calib-images",
            "2",
            "--layout",
            "tensorrt",
        ],
    )
    assert trt.exit_code == 0, trt.output
    assert json.loads((tmp_path / "t" / "model.json").read_text())["int8"]["target"] == "tensorrt"


def test_accuracy_aware_mode_ranks_and_stops_within_budget(quick, ranges):
    from calib.accuracy import tune_exclusions

    _, data, source, raw = quick
    targets = find_targets(raw)
    kwargs = {"eval_data": data, "eval_split": "val", "limit": 2, "sensitivity_images": 1}
    excluded, sensitivity, steps = tune_exclusions(
        raw, ranges[1].scales(), targets, source.config, input_format(raw), max_drop=100.0, **kwargs
    )
    assert excluded == [] and len(steps) == 1 and set(sensitivity) == {t.node for t in targets}


def test_cli_engine_format_needs_tensorrt(quick, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        result = CliRunner().invoke(
            app, ["export", "--checkpoint", str(quick[0]), "--format", "engine", "--out", str(tmp_path / "x")]
        )
        assert result.exit_code == 2 and "TensorRT is not installed" in result.output
        return
    pytest.skip("TensorRT is installed: covered by test_engine_builds_from_qdq_onnx")


def test_engine_builds_from_qdq_onnx(quick, ranges, tmp_path):
    """TensorRT 10 / 11 compile the Q/DQ graph (strongly typed) and the FP32 graph with the cache."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU machine)")
    from export.tensorrt_engine import EngineOptions, build_engine

    raw = quick[3]
    qdq = tmp_path / "int8.onnx"
    onnx.save(quantize_model(raw, ranges[1].scales()), qdq)
    build_engine(qdq, tmp_path / "int8.engine", EngineOptions(precision="int8", strongly_typed=True))
    if int(trt.__version__.split(".")[0]) < 11:
        fp32 = tmp_path / "fp32.onnx"
        onnx.save(raw, fp32)
        cache = ranges[1].cache_path
        build_engine(
            fp32, tmp_path / "implicit.engine", EngineOptions(precision="int8", calibration_cache=cache)
        )


def test_cli_calibrate_refuses_unlabelled_report_data_before_exporting(quick, tmp_path):
    import shutil

    checkpoint, data, _, _ = quick
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((data / "leftImg8bit" / "train").rglob("*.png"))[:2]:
        shutil.copy(path, images / path.name)
    out = tmp_path / "o"
    args = ["calibrate", "--checkpoint", str(checkpoint), "--data", str(images), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "gtFine/val" in result.output and "--no-report" in result.output
    assert not out.exists()
