"""The Mask2Former R50 baseline: fidelity to the paper's cost, its deformable attention, export."""

import numpy as np
import pytest
import torch

from pem.config import get_preset
from pem.flops import count_cost
from pem.mask2former import MSDeformAttn, build_mask2former, masked_attention_mask
from pem.paper import PAPER_ROWS, compare_with_paper


def _naive_bilinear(value: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """value (D, h, w) at pixel coordinates (x, y) (pixel centres at integers), zeros outside."""
    _, h, w = value.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    out = torch.zeros(value.shape[0], dtype=value.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * value[:, yy, xx]
    return out


def _naive_msdeform_attn(attn: MSDeformAttn, query, reference_points, value, shapes):
    """The Deformable DETR formula written out point by point (no grid_sample)."""
    b, nq, c = query.shape
    heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
    d = c // heads
    v, offsets, weights = attn.project(query, value)
    weights = weights.view(b, nq, heads, levels, points)
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    out = torch.zeros(b, nq, heads, d)
    for bi in range(b):
        for qi in range(nq):
            for hi in range(heads):
                for li, (h, w) in enumerate(shapes):
                    level = v[bi, starts[li] : starts[li + 1], hi].T.reshape(d, h, w)
                    for pi in range(points):
                        # normalised location -> pixel coordinates (align_corners=False)
                        rx, ry = reference_points[bi, qi, li].tolist()
                        ox, oy = offsets[bi, qi, hi, li, pi].tolist()
                        x = (rx + ox / w) * w - 0.5
                        y = (ry + oy / h) * h - 0.5
                        out[bi, qi, hi] += weights[bi, qi, hi, li, pi] * _naive_bilinear(level, x, y)
    return attn.output_proj(out.view(b, nq, c))


@torch.no_grad()
def test_deformable_attention_matches_the_formula_point_by_point():
    torch.manual_seed(0)
    attn = MSDeformAttn(dim=16, num_levels=2, num_heads=2, num_points=3).eval()
    for p in attn.parameters():  # away from the init (zero offsets weights, uniform attention)
        p.add_(torch.randn_like(p) * 0.5)
    shapes = [(3, 5), (2, 3)]
    n = sum(h * w for h, w in shapes)
    query = torch.randn(2, 4, 16)
    value = torch.randn(2, n, 16)
    reference_points = torch.rand(2, 4, 2, 2) * 1.2 - 0.1  # some points sample outside (zeros)
    ours = attn(query, reference_points, value, shapes)
    expected = _naive_msdeform_attn(attn, query, reference_points, value, shapes)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_attention_mask_rules():
    logits = torch.tensor([[[[1.0, -1.0], [0.5, -0.1]], [[-1.0, -2.0], [-3.0, -0.5]]]])  # (1, 2, 2, 2)
    mask = masked_attention_mask(logits, (2, 2), num_heads=2)
    assert mask.shape == (2, 2, 4)
    assert mask[0].tolist() == [[False, True, False, True], [False] * 4]  # query 1 empty: sees all
    assert torch.equal(mask[0], mask[1])


def test_cost_is_the_papers_within_1_and_5_percent():
    rows = [r for r in compare_with_paper() if r.row.architecture == "mask2former"]
    assert [(r.row.preset, r.row.gflops) for r in rows] == [
        ("cityscapes-panoptic-r50", 519.0),
        ("cityscapes-semantic-r50", 523.0),
    ]
    for r in rows:
        assert r.params_error <= 0.01, (r.row.label, r.params_m)
        assert r.gflops_error <= 0.05, (r.row.label, r.gflops)
    assert len(PAPER_ROWS) == len(compare_with_paper())


def test_cost_by_part_and_the_grid_sample_count():
    cost = count_cost(get_preset("cityscapes-panoptic-r50"), (1024, 2048), architecture="mask2former")
    parts = {k: v / 1e9 for k, v in cost.macs_by_part.items()}
    # ResNet-50 as in PEM's row; the encoder dominates the pixel decoder.
    pem = count_cost(get_preset("cityscapes-panoptic-r50"), (1024, 2048))
    assert cost.macs_by_part["backbone"] == pem.macs_by_part["backbone"]
    assert 280 < parts["pixel_decoder"] < 300 and 55 < parts["transformer_decoder"] < 62, parts
    pem_ratio = pem.macs / cost.macs
    assert pem_ratio == pytest.approx(237 / 519, abs=0.01)  # the paper's FLOP ratio, 0.46
    with pytest.raises(ValueError, match="architecture"):
        count_cost(get_preset("cityscapes-panoptic-r50"), (64, 64), architecture="segformer")


@torch.no_grad()
def test_grid_sample_is_counted_as_fvcore_does():
    from torch.utils.flop_counter import FlopCounterMode

    from pem.flops import flop_counter

    with torch.device("meta"):
        attn = MSDeformAttn(dim=256, num_levels=3, num_heads=8, num_points=4)
        shapes = [(4, 8), (8, 16), (16, 32)]
        tokens = sum(h * w for h, w in shapes)
        args = (torch.empty(1, tokens, 256), torch.empty(1, tokens, 3, 2), torch.empty(1, tokens, 256))
    plain, ours = FlopCounterMode(display=False), flop_counter()
    for counter in (plain, ours):
        with counter:
            attn(*args, shapes)
    # fvcore: 4 per output element of each level's grid_sample (8 heads * 32 ch, tokens, 4 points).
    assert ours.get_total_flops() - plain.get_total_flops() == 2 * 3 * 4 * (8 * 32 * tokens * 4)
    assert plain.get_total_flops() > 0


@torch.no_grad()
def test_exports_to_onnx_and_runs_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from export.heads import ExportedModel
    from export.onnx_export import export_to_onnx

    torch.manual_seed(0)
    cfg = get_preset("cityscapes-panoptic-r50").replace(input_size=(64, 128))
    model = build_mask2former(cfg).eval()
    wrapped = ExportedModel(model, "raw", "none").eval()
    images = torch.randn(1, 3, 64, 128)
    proto = export_to_onnx(
        wrapped,
        (images,),
        input_names=["images"],
        output_names=["pred_logits", "pred_masks"],
        exporter="torchscript",
    )
    ops = {node.op_type for node in proto.graph.node}
    assert "GridSample" in ops
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, masks = session.run(None, {"images": images.numpy()})
    ref_logits, ref_masks = wrapped(images)
    assert logits.shape == (1, 100, 20) and masks.shape == (1, 100, 16, 32)
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(masks, ref_masks.numpy(), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_semantic_and_panoptic_inference_run():
    torch.manual_seed(0)
    cfg = get_preset("cityscapes-panoptic-r50").replace(input_size=(64, 96))
    model = build_mask2former(cfg).eval()
    images = torch.randint(0, 256, (1, 3, 60, 90), dtype=torch.uint8)
    scores = model.predict_semantic(images)
    assert scores.shape == (1, 19, 60, 90) and torch.isfinite(scores).all()
    out = model(model._pad(images))
    assert len(out["aux_outputs"]) == 9  # predictions before the first and after each of 9 layers
    (result,) = model.predict_panoptic(images)
    assert result.id_map.shape == (60, 90)
