"""Export heads in PyTorch: the semantic head is the official post-processing, the panoptic head
plus the numpy fusion reproduce pem.inference.panoptic_inference exactly."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.decompose import DecomposedDeformConv2d, with_decomposed_deform_conv
from export.heads import (
    HEAD_OUTPUTS,
    ExportedModel,
    PanopticPostprocess,
    RawModel,
    SemanticPostprocess,
)
from pem.config import get_preset
from pem.inference import panoptic_inference, semantic_inference
from pem.model import PEM
from pem.ops.deform_conv import ModulatedDeformConv2d
from runtime.core.postprocess import category_map
from runtime.core.postprocess import fuse_panoptic as panoptic_fusion


def _synthetic_predictions(seed: int, b: int = 2, q: int = 12, k: int = 5, h: int = 6, w: int = 8):
    """Confident class logits (many queries pass 0.8) and blobby mask logits."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, q, k + 1, generator=gen)
    winners = torch.randint(0, k + 1, (b, q), generator=gen)
    boost = torch.rand(b, q, generator=gen) * 8.0
    logits.scatter_add_(2, winners[..., None], boost[..., None])
    masks = torch.randn(b, q, h, w, generator=gen) * 4.0 + torch.randn(b, q, 1, 1, generator=gen) * 2.0
    return logits, masks


def _reference_panoptic(logits, masks, thing_ids, object_thr, overlap_thr):
    """What PEM.predict_panoptic does per image (sizes are multiples of 32 in export: no crop)."""
    results = []
    for lg, mk in zip(logits, masks):
        up = F.interpolate(mk[None], size=(mk.shape[-2] * 4, mk.shape[-1] * 4), mode="bilinear")[0]
        results.append(panoptic_inference(lg, up, thing_ids, object_thr, overlap_thr))
    return results


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresholds", [(0.8, 0.8), (0.3, 0.5), (0.0, 0.0)])
def test_panoptic_head_and_numpy_fusion_match_panoptic_inference(seed, thresholds):
    k = 5
    thing_ids = (2, 3)
    object_thr, overlap_thr = thresholds
    logits, masks = _synthetic_predictions(seed, k=k)
    head = PanopticPostprocess(k, object_thr).eval()
    with torch.no_grad():
        scores, classes, owner, owner_fg, mask_area = (t.numpy() for t in head(logits, masks))
    assert scores.dtype == np.float32 and classes.dtype == np.int32 and owner.dtype == np.int32
    assert owner_fg.dtype == np.uint8 and mask_area.dtype == np.int32
    expected = _reference_panoptic(logits, masks, thing_ids, object_thr, overlap_thr)
    kept_somewhere = False
    for i, ref in enumerate(expected):
        id_map, segments = panoptic_fusion(
            scores[i], classes[i], owner[i], owner_fg[i], mask_area[i], thing_ids, k, object_thr, overlap_thr
        )
        np.testing.assert_array_equal(id_map, ref.id_map.numpy())
        got = [(s.id, s.category_id, s.isthing, s.score, s.area) for s in segments]
        want = [(s.id, s.category_id, s.isthing, s.score, s.area) for s in ref.segments]
        assert got == want
        kept_somewhere |= bool(want)
        labels = category_map(id_map, segments)
        assert ((labels == 255) == (id_map == 0)).all()
    if object_thr < 0.8:
        assert kept_somewhere  # the test data exercises the fusion, not just the empty case


def test_semantic_head_is_the_official_postprocessing():
    logits, masks = _synthetic_predictions(0, q=10, k=7)
    with torch.no_grad():
        labels = SemanticPostprocess()(logits, masks)
        scores = semantic_inference(logits, masks, (masks.shape[-2] * 4, masks.shape[-1] * 4))
    assert labels.dtype == torch.int32 and labels.shape == (2, 24, 32)
    top2 = scores.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-5  # MatMul vs einsum may order sums differently
    assert clear.float().mean() > 0.99
    assert torch.equal(labels[clear], scores.argmax(1).to(torch.int32)[clear])


@pytest.mark.parametrize("mode", ["none", "normalize", "uint8"])
def test_raw_model_preprocessing(mode):
    model = PEM(get_preset("cityscapes-semantic-tiny")).eval()
    images = torch.randint(0, 256, (1, 3, 64, 96), dtype=torch.uint8)
    expected = model(model.normalize(images))
    if mode == "none":
        x = model.normalize(images)
    elif mode == "normalize":
        x = images.float()
    else:
        x = images
    with torch.no_grad():
        logits, masks = RawModel(model, mode).eval()(x)
    torch.testing.assert_close(logits, expected["pred_logits"])
    torch.testing.assert_close(masks, expected["pred_masks"])


def test_exported_model_output_order_matches_the_spec():
    model = PEM(get_preset("cityscapes-panoptic-tiny")).eval()
    x = torch.randn(1, 3, 64, 64)
    for head, specs in HEAD_OUTPUTS.items():
        with torch.no_grad():
            outs = ExportedModel(model, head).eval()(x)
        assert len(outs) == len(specs)
        for out, spec in zip(outs, specs):
            assert str(out.dtype).replace("torch.", "") == spec.dtype
            assert out.dim() == len(spec.shape)


def test_decomposed_deform_conv_is_surgery_on_a_copy():
    model = PEM(get_preset("cityscapes-semantic-tiny")).eval()
    clone, count = with_decomposed_deform_conv(model)
    assert count == 3
    assert all(
        type(m) is ModulatedDeformConv2d for m in model.modules() if isinstance(m, ModulatedDeformConv2d)
    )
    assert sum(type(m) is DecomposedDeformConv2d for m in clone.modules()) == 3
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), clone(x)
    torch.testing.assert_close(b["pred_logits"], a["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["pred_masks"], a["pred_masks"], atol=1e-4, rtol=1e-4)
