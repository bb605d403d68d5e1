"""Calibration building blocks: ranges, TensorRT caches, image sampling, Q/DQ insertion (no model)."""

import struct

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calib.data import CalibrationImages, list_images, sample_images
from calib.errors import CalibrationError
from calib.graph import check_qdq, dequantized_consumers, find_targets, insert_qdq, node_part, quantize_weight
from calib.ranges import RangeCollector, TensorStats
from calib.trt_cache import make_cache, parse_cache, read_cache, version_int, write_cache
from export.errors import ExportError
from runtime.core.preprocess import InputFormat, Preprocessor

ort = pytest.importorskip("onnxruntime")


# -- ranges ------------------------------------------------------------------------------------


def test_minmax_percentile_entropy_on_a_heavy_tail():
    rng = np.random.default_rng(0)
    stats = TensorStats()
    for _ in range(4):
        x = rng.standard_normal(50_000).astype(np.float32)
        x[:5] = 40.0  # rare outliers
        stats.update(x)
    assert stats.minmax() == pytest.approx(40.0)
    p = stats.percentile(99.99)
    e = stats.entropy()
    assert 3.0 < p < 40.0  # clips the outliers
    assert 2.0 < e < 40.0
    assert stats.hist.sum() == pytest.approx(200_000)


def test_histogram_range_grows_without_losing_counts():
    stats = TensorStats(bins=64)
    stats.update(np.full(10, 1.0, np.float32))
    stats.update(np.full(10, 7.5, np.float32))  # range doubles three times
    assert stats.top >= 7.5 and stats.hist.sum() == 20
    assert stats.percentile(100.0) == pytest.approx(7.5)


def test_collector_rejects_unknown_method():
    with pytest.raises(CalibrationError, match="--calib-method"):
        RangeCollector(["a"], "mse")  # type: ignore[arg-type]


def test_all_zero_tensor_is_harmless():
    stats = TensorStats()
    stats.update(np.zeros(100, np.float32))
    assert stats.minmax() == 0.0 and stats.entropy() == 0.0 and stats.percentile() == 0.0


# -- TensorRT cache ----------------------------------------------------------------------------


def test_cache_text_format_round_trip(tmp_path):
    cache = make_cache({"images": 2.64, "relu_1": 12.7, "x:0/y": 0.0}, "entropy", "10.3.0")
    text = cache.to_text()
    lines = text.splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    assert lines[2] == "relu_1: " + struct.pack(">f", np.float32(12.7 / 127)).hex()
    assert lines[2] == "relu_1: 3dcccccd"  # 0.1 as big-endian float32
    path = write_cache(tmp_path / "c.cache", cache)
    back = read_cache(path)
    assert back.version == 100300 and back.algorithm == "EntropyCalibration2"
    assert back.scales == cache.scales
    assert back.amax()["relu_1"] == pytest.approx(12.7, rel=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["c.cache"]  # no temp leftovers


def test_cache_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.cache"
    bad.write_text("TRT-100300-EntropyCalibration2\nrelu: zz\n")
    with pytest.raises(CalibrationError, match=r"bad.cache:2"):
        read_cache(bad)
    with pytest.raises(CalibrationError, match=r":1: not a TensorRT"):
        parse_cache("hello\n", "x.cache")
    with pytest.raises(CalibrationError, match="no such calibration cache"):
        read_cache(tmp_path / "missing.cache")
    assert version_int("11.0.1") == 110001
    with pytest.raises(CalibrationError, match="--trt-version"):
        version_int("ten")
    assert issubclass(CalibrationError, ExportError)


# -- images ------------------------------------------------------------------------------------


def _images(root, n, sub="", size=(40, 64)):
    folder = root / sub
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def test_sampling_is_deterministic_and_order_independent(tmp_path):
    _images(tmp_path, 12, "a")
    _images(tmp_path, 3, "b/c")
    paths = list_images(tmp_path)
    assert len(paths) == 15
    one = sample_images(paths, 5, seed=0, root=tmp_path)
    two = sample_images(list(reversed(paths)), 5, seed=0, root=tmp_path)
    assert one == two and len(one) == 5 and one == sorted(one)
    assert sample_images(paths, 5, seed=1, root=tmp_path) != one
    assert sample_images(paths, 100, root=tmp_path) == paths


def test_cityscapes_layout_uses_train_split(tmp_path):
    _images(tmp_path, 2, "leftImg8bit/val/x")
    with pytest.raises(CalibrationError, match="leftImg8bit/train"):
        list_images(tmp_path)
    folder = tmp_path / "leftImg8bit" / "train" / "city"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "city_000000_000000_leftImg8bit.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(folder / "notes.png"), np.zeros((8, 8, 3), np.uint8))  # not a leftImg8bit file
    assert [p.name for p in list_images(tmp_path)] == ["city_000000_000000_leftImg8bit.png"]


def test_calibration_inputs_match_the_runtime_preprocessing(tmp_path):
    _images(tmp_path, 3)
    fmt = InputFormat(32, 64)
    images = CalibrationImages(tmp_path, fmt, num_images=3)
    batches = list(images)
    assert len(batches) == 3 and batches[0].shape == (1, 3, 32, 64) and batches[0].dtype == np.float32
    expected, _ = Preprocessor(fmt, "stretch", "BGR")([cv2.imread(str(images.paths[0]))])
    np.testing.assert_array_equal(batches[0], expected)
    assert len(images.fingerprint()) == 64


def test_data_errors(tmp_path):
    with pytest.raises(CalibrationError, match="no such folder"):
        list_images(tmp_path / "nope")
    with pytest.raises(CalibrationError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(CalibrationError, match="--calib-images"):
        sample_images([tmp_path], 0)


# -- Q/DQ on a small graph ---------------------------------------------------------------------


def _toy_model() -> onnx.ModelProto:
    """Conv (backbone) -> Relu -> Conv (pixel decoder) -> {DeformConv-like Softmax, Conv (predictor)}."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(
            rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "model.backbone.c1.weight"
        ),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "model.backbone.c1.bias"),
        numpy_helper.from_array(
            rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "model.sem_seg_head.pixel_decoder.p.weight"
        ),
        numpy_helper.from_array(
            rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "model.sem_seg_head.predictor.q.weight"
        ),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["images", "model.backbone.c1.weight", "model.backbone.c1.bias"],
            ["c1"],
            "c1",
            pads=[1] * 4,
        ),
        helper.make_node("Relu", ["c1"], ["r1"], "r1"),
        helper.make_node("Conv", ["r1", "model.sem_seg_head.pixel_decoder.p.weight"], ["p"], "p"),
        helper.make_node("Softmax", ["p"], ["s"], "s", axis=1),
        helper.make_node("Conv", ["p", "model.sem_seg_head.predictor.q.weight"], ["q"], "q"),
        helper.make_node("Add", ["s", "q"], ["out"], "add"),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def test_targets_follow_module_scopes():
    model = _toy_model()
    inits = {t.name for t in model.graph.initializer}
    assert [node_part(n, inits) for n in model.graph.node] == [
        "backbone",
        None,
        "pixel_decoder",
        None,
        "transformer_decoder",
        None,
    ]
    targets = find_targets(model)
    assert [(t.node, t.part, t.axis) for t in targets] == [("c1", "backbone", 0), ("p", "pixel_decoder", 0)]
    # Scope from exporter metadata wins where present.
    node = model.graph.node[4]
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", '["", "backbone", "x2"]'
    assert node_part(node, ()) == "backbone"


@pytest.mark.parametrize("layout", ["tensorrt", "onnxruntime"])
def test_qdq_insertion_runs_and_stays_close(layout):
    model = _toy_model()
    targets = find_targets(model)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    tensors = ["images", "r1", "c1", "p"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    values = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        tensors, {"images": x}
    )
    scales = {t: float(np.abs(v).max()) / 127 for t, v in zip(tensors, values)}
    quantized = insert_qdq(model, targets, scales, layout=layout)
    onnx.checker.check_model(quantized)
    assert check_qdq(quantized, layout) == []
    ops = [n.op_type for n in quantized.graph.node]
    # tensorrt: images, r1 and both weights; onnxruntime: the RGB stem c1 stays float, so r1,
    # the weight of p and the output of p (read by the float predictor conv, not the Softmax)
    assert ops.count("DequantizeLinear") == (4 if layout == "tensorrt" else 3)
    # weights: int8 zero points (symmetric); activations: int8 zero (tensorrt) or uint8 128
    # (onnxruntime), the same grid
    for t in quantized.graph.initializer:
        if t.name.endswith("zero_point") or t.name == "calib.zero_point_int8":
            assert t.data_type == TensorProto.INT8 and not numpy_helper.to_array(t).any()
        if t.name == "calib.zero_point_uint8":
            assert t.data_type == TensorProto.UINT8 and int(numpy_helper.to_array(t)) == 128
    by_name = {n.name: n for n in quantized.graph.node}
    assert (by_name["c1"].input[0] == "images") == (layout == "onnxruntime")
    consumers = {n.op_type for n in dequantized_consumers(quantized)}
    assert "Softmax" not in consumers
    if layout == "tensorrt":
        assert consumers == {"Conv"}
    got = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )
    want = ref.run(None, {"images": x})
    assert np.abs(got[0] - want[0]).max() < 0.05 * np.abs(want[0]).max()


def test_weight_quantisation_axes():
    w = np.random.default_rng(0).standard_normal((6, 4, 3, 3)).astype(np.float32)
    q, s = quantize_weight(w, 0)
    assert q.dtype == np.int8 and s.shape == (6,) and np.abs(q).max() == 127
    np.testing.assert_allclose(q * s[:, None, None, None], w, atol=float(s.max()) / 2 + 1e-7)
    _, s1 = quantize_weight(w, 1)
    assert s1.shape == (4,)
    _, st = quantize_weight(w, None)
    assert st.shape == ()


def test_missing_range_is_a_one_line_error():
    model = _toy_model()
    with pytest.raises(CalibrationError, match="no calibration range for tensor 'images'"):
        insert_qdq(model, find_targets(model), {})
    with pytest.raises(CalibrationError, match="--target"):
        insert_qdq(model, find_targets(model), {}, layout="x")


# -- onnxruntime layout: sub-pixel up-samplers -------------------------------------------------


def _upsampler_model(c_in=3, c_out=5, h=5, w=7, bias=True, **attrs):
    rng = np.random.default_rng(4)
    weight = numpy_helper.from_array(
        rng.standard_normal((c_in, c_out, 4, 4)).astype(np.float32),
        "model.sem_seg_head.pixel_decoder.up.weight",
    )
    inits = [weight]
    inputs = ["x", weight.name]
    if bias:
        inits.append(
            numpy_helper.from_array(
                rng.standard_normal(c_out).astype(np.float32), "model.sem_seg_head.pixel_decoder.up.bias"
            )
        )
        inputs.append(inits[-1].name)
    settings = {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1], **attrs}
    nodes = [
        helper.make_node("ConvTranspose", inputs, ["up"], "up", **settings),
        helper.make_node("Relu", ["up"], ["y"], "relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "up",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, None, None])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


@pytest.mark.parametrize("bias", [True, False])
def test_subpixel_rewrite_is_exact(bias):
    from calib.ort_layout import rewrite_upsamplers

    model = _upsampler_model(bias=bias)
    rewritten, count = rewrite_upsamplers(model)
    onnx.checker.check_model(rewritten)
    assert count == 1
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "DepthToSpace", "Slice", "Relu"]
    # the scope that decides quantisation survives in the new weight's name
    assert rewritten.graph.node[0].input[1].startswith("model.sem_seg_head.pixel_decoder.")
    x = np.random.default_rng(5).standard_normal((1, 3, 5, 7)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0]
    assert got.shape == want.shape == (1, 5, 10, 14)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    "attrs", [{"strides": [1, 1]}, {"group": 5}, {"output_padding": [1, 1]}, {"pads": [0, 0, 0, 0]}]
)
def test_other_conv_transposes_are_left_alone(attrs):
    from calib.ort_layout import rewrite_upsamplers

    c_in = 5 if attrs.get("group") else 3
    model = _upsampler_model(c_in=c_in, **attrs)
    if attrs.get("group"):  # grouped weight: (C_in, C_out / group, k, k)
        model.graph.initializer[0].CopyFrom(
            numpy_helper.from_array(
                np.ones((5, 1, 4, 4), np.float32), "model.sem_seg_head.pixel_decoder.up.weight"
            )
        )
        model.graph.initializer[1].CopyFrom(
            numpy_helper.from_array(np.ones(5, np.float32), "model.sem_seg_head.pixel_decoder.up.bias")
        )
    rewritten, count = rewrite_upsamplers(model)
    assert count == 0 and [n.op_type for n in rewritten.graph.node] == ["ConvTranspose", "Relu"]


def test_onnxruntime_layout_fuses_upsamplers_and_moves_int8(tmp_path):
    from calib.ort_layout import prepare_for_layout

    model = prepare_for_layout(_upsampler_model(c_in=8, c_out=8, h=6, w=6), "onnxruntime")
    x = np.random.default_rng(6).standard_normal((1, 8, 6, 6)).astype(np.float32)
    tensors = ["x", *(n.output[0] for n in model.graph.node)]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(
        helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors[1:-1]
    )
    values = [x, *ort.InferenceSession(probe.SerializeToString()).run(tensors[1:], {"x": x})]
    scales = {t: float(np.abs(v).max()) / 127 for t, v in zip(tensors, values)}
    quantized = insert_qdq(model, find_targets(model), scales, layout="onnxruntime")
    onnx.checker.check_model(quantized)
    # Q/DQ pairs around the data movement, with the conv output's scale
    producer = {o: n for n in quantized.graph.node for o in n.output}
    for op in ("DepthToSpace", "Slice"):
        node = next(n for n in quantized.graph.node if n.op_type == op)
        assert producer[node.input[0]].op_type == "DequantizeLinear"
    # onnxruntime fuses the conv into QLinearConv and runs the data movement on 8-bit tensors
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    ops = [n.op_type for n in optimized.graph.node]
    assert "QLinearConv" in ops and "ConvTranspose" not in ops and "Conv" not in ops
    producer = {o: n for n in optimized.graph.node for o in n.output}
    moved = next(n for n in optimized.graph.node if n.op_type == "DepthToSpace")
    assert producer[moved.input[0]].op_type != "DequantizeLinear"
    got = session.run(None, {"x": x})[0]
    want = values[-1]
    assert np.abs(got - want).max() < 0.03 * np.abs(want).max()


def _biased_chain(channels: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Three biased 3x3 convs with ReLUs (backbone, backbone, pixel decoder), wide enough for INT8."""
    rng = np.random.default_rng(seed)
    inits, nodes, prev = [], [], "images"
    for i, part in enumerate(["backbone", "backbone", "sem_seg_head.pixel_decoder"]):
        w, b = f"model.{part}.c{i}.weight", f"model.{part}.c{i}.bias"
        weight = (rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32)
        inits += [
            numpy_helper.from_array(weight, w),
            numpy_helper.from_array((rng.standard_normal(channels) * 0.5).astype(np.float32), b),
        ]
        nodes += [
            helper.make_node("Conv", [prev, w, b], [f"c{i}"], f"c{i}", pads=[1] * 4),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"], f"r{i}"),
        ]
        prev = f"r{i}"
    shape = [1, channels, 16, 16]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _chain_scales(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    tensors = ["images"] + [n.output[0] for n in model.graph.node]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(
        helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors[1:-1]
    )
    values = [x, *ort.InferenceSession(probe.SerializeToString()).run(tensors[1:], {"images": x})]
    return {t: float(np.abs(v).max()) / 127 for t, v in zip(tensors, values)}


def test_onnxruntime_layout_biases_are_int32_with_their_own_dequantize():
    model = _biased_chain()
    x = np.random.default_rng(1).standard_normal((1, 16, 16, 16)).astype(np.float32)
    scales = _chain_scales(model, x)
    quantized = insert_qdq(model, find_targets(model), scales, layout="onnxruntime")
    onnx.checker.check_model(quantized)
    inits = {t.name: t for t in quantized.graph.initializer}
    producer = {o: n for n in quantized.graph.node for o in n.output}
    weight_scales = {
        n: numpy_helper.to_array(t) for n, t in inits.items() if n.endswith("weight_axis0_scale")
    }
    for node in (n for n in quantized.graph.node if n.op_type == "Conv"):
        dq = producer[node.input[2]]
        assert dq.op_type == "DequantizeLinear"
        values, scale, zero = (inits[name] for name in dq.input)
        assert values.data_type == TensorProto.INT32 and zero.data_type == TensorProto.INT32
        assert not numpy_helper.to_array(zero).any()
        act_scale = scales[node.input[0].removesuffix("_dequantized")]
        w_scale = weight_scales[f"{node.input[1].removesuffix('_dequantized')}_scale"]
        np.testing.assert_allclose(numpy_helper.to_array(scale), np.float32(act_scale) * w_scale, rtol=1e-6)
        assert not any(
            name in inits and inits[name].data_type == TensorProto.FLOAT for name in node.input[2:]
        )
    # TensorRT's layout keeps float biases: TensorRT's DequantizeLinear takes no INT32 input.
    trt = insert_qdq(model, find_targets(model), scales, layout="tensorrt")
    trt_inits = {t.name: t for t in trt.graph.initializer}
    assert all(
        trt_inits[n.input[2]].data_type == TensorProto.FLOAT for n in trt.graph.node if n.op_type == "Conv"
    )
    assert all(t.data_type != TensorProto.INT32 for t in trt.graph.initializer)


def test_int32_biases_make_onnxruntime_compute_what_the_spec_says():
    from onnx.reference import ReferenceEvaluator

    model = _biased_chain()
    x = np.random.default_rng(1).standard_normal((1, 16, 16, 16)).astype(np.float32)
    scales = _chain_scales(model, x)
    step = scales["r2"]
    diffs = {}
    for int32 in (False, True):
        quantized = insert_qdq(model, find_targets(model), scales, layout="onnxruntime", int32_biases=int32)
        spec = ReferenceEvaluator(quantized).run(None, {"images": x})[0]
        session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
        diffs[int32] = float(np.abs(spec - session.run(None, {"images": x})[0]).max()) / step
    # Float biases: onnxruntime's fused kernels round them to INT32 and the outputs move by a
    # quantisation step; INT32 biases: the graph means the same in both.
    assert diffs[False] >= 0.5 and diffs[True] <= 1e-3, diffs


def test_int32_bias_that_cannot_fit_stays_float():
    model = _biased_chain()
    weight = next(t for t in model.graph.initializer if t.name == "model.backbone.c1.weight")
    weight.CopyFrom(numpy_helper.from_array(np.zeros((16, 16, 3, 3), np.float32), weight.name))
    x = np.random.default_rng(1).standard_normal((1, 16, 16, 16)).astype(np.float32)
    quantized = insert_qdq(model, find_targets(model), _chain_scales(model, x), layout="onnxruntime")
    conv = next(n for n in quantized.graph.node if n.name == "c1")
    assert conv.input[2] == "model.backbone.c1.bias"  # zero weights: the bias scale would be ~0


def test_tensorrt_lint_accepts_the_tensorrt_layout_and_would_reject_int32_biases():
    from export.trt_lint import TARGETS as TRT_TARGETS
    from export.trt_lint import lint_model

    model = _biased_chain()
    x = np.random.default_rng(1).standard_normal((1, 16, 16, 16)).astype(np.float32)
    scales = _chain_scales(model, x)
    report = lint_model(insert_qdq(model, find_targets(model), scales, layout="tensorrt"))
    assert all(report.rejected(t) == [] for t in TRT_TARGETS), report.summary()
    # Why the TensorRT layout keeps float biases: an INT32 DequantizeLinear is refused.
    ort_layout = lint_model(insert_qdq(model, find_targets(model), scales, layout="onnxruntime"))
    assert any("DequantizeLinear" in f.op for f in ort_layout.rejected(TRT_TARGETS[0])), ort_layout.summary()
