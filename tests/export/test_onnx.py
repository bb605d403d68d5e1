"""ONNX export of the tiny preset: every head, both deformable-conv implementations, dynamic
shapes, in-graph preprocessing and the TorchScript fallback, checked in onnxruntime."""

import numpy as np
import pytest

from export.heads import HEAD_OUTPUTS, ExportedModel
from export.parity import compare, make_samples, open_session
from export.pipeline import ExportOptions, export_graph
from export.simplify import FORBIDDEN_OPS, MAX_IR_VERSION
from export.source import load_source
from export.trt_lint import lint_model
from tests.helpers.export_models import tiny_graph, tiny_source

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

H, W = 64, 128


def _input_spec(source, dtype="float32", in_graph=False, shape=(1, 3, H, W)):
    return {
        "shape": list(shape),
        "dtype": dtype,
        "normalize_in_graph": in_graph,
        "normalization": {"mean": list(source.config.pixel_mean), "std": list(source.config.pixel_std)},
        "default_size": [H, W],
    }


@pytest.fixture(scope="module")
def source():
    return tiny_source()


@pytest.mark.parametrize("deform_impl", ["native", "decomposed"])
@pytest.mark.parametrize("head", ["raw", "semantic", "panoptic"])
def test_every_head_and_deform_impl_matches_pytorch(source, head, deform_impl):
    model, context = tiny_graph(head, deform_impl)
    counts = context.info["op_counts"]
    assert counts.get("DeformConv", 0) == (3 if deform_impl == "native" else 0)
    assert not set(counts) & FORBIDDEN_OPS
    if head != "raw":
        assert "Einsum" not in counts
    assert counts.get("ArgMax", 0) >= 2  # the prototype gathers (layer 0's queries are constant-folded)
    assert counts.get("GatherElements", 0) >= 2
    assert model.ir_version <= MAX_IR_VERSION
    lint = lint_model(model)
    assert not lint.rejected("10") and not lint.rejected("11"), lint.table()

    session = open_session(model)
    specs = HEAD_OUTPUTS[head]
    assert [o.name for o in session.get_outputs()] == [s.name for s in specs]
    report = compare(
        session,
        ExportedModel(source.model, head).eval(),
        make_samples(_input_spec(source), random=1, scenes=1),
        head=head,
        num_classes=source.config.num_classes,
        thing_ids=source.config.thing_ids,
        object_mask_threshold=0.0,
    )
    for spec in specs:
        worst = report.worst(spec.name)
        assert worst.dtype == spec.dtype
        if spec.dtype == "float32":
            assert worst.max_rel < 1e-5, report.table()
        elif spec.name in ("owner", "owner_fg"):
            assert worst.agreement >= 0.999, report.table()
        else:
            assert worst.agreement == 1.0, report.table()
    assert report.label_agreement >= 0.999 and report.miou >= 0.99


def test_decomposed_graph_matches_native_graph(source):
    native, _ = tiny_graph("raw")
    decomposed, context = tiny_graph("raw", "decomposed")
    assert context.info["decomposed_deform_convs"] == 3
    assert context.info["integer_clips_rewritten"] > 0  # TensorRT's Clip takes floats only
    x = make_samples(_input_spec(source), random=1, scenes=0)[0][1]
    a = open_session(native).run(None, {"images": x})
    b = open_session(decomposed).run(None, {"images": x})
    for got, want in zip(b, a):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_normalize_in_graph_with_static_batch_two(source):
    model, _, _ = export_graph(source, ExportOptions(head="semantic", preprocess="normalize", batch=2))
    (inp,) = model.graph.input
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [2, 3, H, W]
    report = compare(
        open_session(model),
        ExportedModel(source.model, "semantic", "normalize").eval(),
        make_samples(_input_spec(source, in_graph=True, shape=(2, 3, H, W)), random=1, scenes=1),
        head="semantic",
        num_classes=source.config.num_classes,
    )
    assert report.label_agreement >= 0.999


def test_torchscript_fallback_exporter(source):
    model, context, _ = export_graph(source, ExportOptions(head="semantic", exporter="torchscript"))
    counts = context.info["op_counts"]
    assert counts["DeformConv"] == 3 and not set(counts) & FORBIDDEN_OPS
    report = compare(
        open_session(model),
        ExportedModel(source.model, "semantic").eval(),
        make_samples(_input_spec(source), random=1, scenes=1),
        head="semantic",
        num_classes=source.config.num_classes,
    )
    assert report.label_agreement >= 0.999


@pytest.mark.slow
def test_r50_raw_export_at_256x512_matches_pytorch():
    """The full-size backbone at a small input (the 1024x2048 run is benchmarks/export_parity_r50.py)."""
    source = load_source(preset="cityscapes-semantic-r50", height=256, width=512)
    model, context, _ = export_graph(source, ExportOptions(head="raw"))
    counts = context.info["op_counts"]
    assert counts["DeformConv"] == 3 and not set(counts) & FORBIDDEN_OPS
    spec = {**_input_spec(source, shape=(1, 3, 256, 512)), "default_size": [256, 512]}
    report = compare(
        open_session(model),
        ExportedModel(source.model, "raw").eval(),
        make_samples(spec, random=1, scenes=0),
        head="raw",
        num_classes=19,
    )
    assert report.worst("pred_logits").max_abs <= 1e-3, report.table()
    assert report.label_agreement >= 0.999
