import pytest
import torch

from pem.config import ConfigError, PEMConfig, get_preset, preset_names
from pem.inference import panoptic_inference, semantic_inference
from pem.model import PEM
from pem.pixel_decoder import CSM, DeformLayer


@pytest.mark.parametrize("name", preset_names())
def test_forward_shapes_for_every_preset(name):
    cfg = get_preset(name)
    model = PEM(cfg).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
    q = cfg.transformer_decoder.num_queries
    assert out["pred_logits"].shape == (1, q, cfg.num_classes + 1)
    assert out["pred_masks"].shape == (1, q, 16, 24)
    assert len(out["aux_outputs"]) == cfg.transformer_decoder.num_layers
    assert all(a["pred_masks"].shape == (1, q, 16, 24) for a in out["aux_outputs"])
    assert torch.isfinite(out["pred_masks"]).all()


def test_training_step_reaches_every_parameter():
    model = PEM(get_preset("cityscapes-panoptic-tiny")).train()
    out = model(torch.randn(2, 3, 64, 128))
    loss = out["pred_logits"].sum() + out["pred_masks"].sum()
    loss = loss + sum(a["pred_logits"].sum() + a["pred_masks"].sum() for a in out["aux_outputs"])
    loss.backward()
    # Every parameter, PEM-CA and deformable offsets included, gets a gradient.
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_csm_applies_sigmoid_twice():
    csm = CSM(8).eval()
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        hidden = csm.mlp[0](x.mean(dim=(2, 3), keepdim=True))
        expected = x * (1 + torch.sigmoid(torch.sigmoid(hidden)))
        torch.testing.assert_close(csm(x), expected)


def test_deform_layer_at_init_is_half_masked_plain_conv():
    layer = DeformLayer(4, 4).eval()
    x = torch.randn(1, 4, 6, 8)
    with torch.no_grad():
        out, up = layer(x)
        conv = torch.nn.functional.conv2d(x, layer.dcn.weight, padding=1) * 0.5
        expected = torch.relu(layer.dcn_bn(conv))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert up.shape == (1, 4, 12, 16)


def test_size_validation_and_padding():
    model = PEM(get_preset("cityscapes-semantic-tiny")).eval()
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 3, 60, 96))
    scores = model.predict_semantic(torch.rand(1, 3, 60, 90) * 255)
    assert scores.shape == (1, 19, 60, 90)
    result = model.predict_panoptic(torch.rand(1, 3, 60, 90) * 255)[0]
    assert result.id_map.shape == (60, 90)


def test_semantic_inference_formula():
    logits = torch.randn(1, 3, 5)
    masks = torch.randn(1, 3, 2, 2)
    scores = semantic_inference(logits, masks, (8, 8))
    up = torch.nn.functional.interpolate(masks, size=(8, 8), mode="bilinear", align_corners=False).sigmoid()
    probs = logits.softmax(-1)[..., :-1]
    expected = (probs[0, :, :, None, None] * up[0, :, None]).sum(0, keepdim=True)
    torch.testing.assert_close(scores, expected)


def test_panoptic_fusion_rules():
    h, w = 4, 6
    big = 10.0
    # classes: 0 stuff, 1 thing; K = 2 (+ no-object)
    logits = torch.tensor(
        [
            [big, 0, 0],  # stuff 0, left half
            [big, 0, 0],  # stuff 0 again, right top: merged with the first
            [0, big, 0],  # thing, right bottom
            [0, 0, big],  # no object: dropped
            [0.1, 0.0, 0.0],  # low score: dropped
        ]
    )
    masks = torch.full((5, h, w), -big)
    masks[0, :, :3] = big
    masks[1, :2, 3:] = big
    masks[2, 2:, 3:] = big
    masks[3] = big
    masks[4] = big
    res = panoptic_inference(logits, masks, thing_ids=(1,))
    assert [(s.category_id, s.isthing) for s in res.segments] == [(0, False), (1, True)]
    stuff_id, thing_id = res.segments[0].id, res.segments[1].id
    assert (res.id_map[:, :3] == stuff_id).all() and (res.id_map[:2, 3:] == stuff_id).all()
    assert (res.id_map[2:, 3:] == thing_id).all()
    assert res.segments[0].area == 12 + 6 and res.segments[1].area == 6
    # A query mostly hidden behind a more confident one fails the overlap threshold.
    logits2 = torch.tensor([[0, big, 0], [0, 3.0, 0]])
    masks2 = torch.full((2, h, w), -big)
    masks2[0, :, :4] = big
    masks2[1, :, 2:] = big
    res2 = panoptic_inference(logits2, masks2, thing_ids=(1,))
    assert len(res2.segments) == 1 and res2.segments[0].area == 16
    empty = panoptic_inference(torch.tensor([[0.0, 0, big]]), masks2[:1], thing_ids=(1,))
    assert empty.segments == [] and (empty.id_map == 0).all()


def test_config_validation_and_presets():
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("cityscapes-semantic-r101")
    with pytest.raises(ConfigError, match="multiples of 32"):
        PEMConfig(input_size=(100, 200))
    cfg = get_preset("cityscapes-panoptic-r50")
    assert cfg.thing_ids == (11, 12, 13, 14, 15, 16, 17, 18)
    assert PEMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="bogus: unknown field"):
        PEMConfig.from_dict({"bogus": 1})
