import pytest
import torch

from pem.baselines import (
    Mask2FormerDecoder,
    MaskedCrossAttentionLayer,
    SDPAMaskedCrossAttentionLayer,
    mask2former_allowed,
    mask2former_attention_mask,
)
from pem.config import TransformerDecoderConfig


def _inputs(b=2, q=5, c=16, h=4, w=6):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, q, c, generator=g),
        torch.randn(b, c, h, w, generator=g),
        torch.randn(b, q, h, w, generator=g),
        torch.randn(b, c, h, w, generator=g),
        torch.randn(b, q, c, generator=g),
    )


def test_attention_mask_rules():
    logits = torch.tensor([[[1.0, -1.0, 0.5], [-1.0, -2.0, -3.0]]])  # query 1 is empty
    mask = mask2former_attention_mask(logits, num_heads=2)
    assert mask.shape == (2, 2, 3)
    assert mask[0].tolist() == [[False, True, False], [False, False, False]]
    assert torch.equal(mask[0], mask[1])


@torch.no_grad()
def test_masked_positions_get_zero_attention():
    layer = MaskedCrossAttentionLayer(16, 4).eval()
    tgt, memory, logits, pos, query_pos = _inputs()
    logits[:, 0] = -1.0  # query 0: empty mask -> attends everywhere
    out = layer(tgt, memory, logits, pos, query_pos)
    assert out.shape == tgt.shape
    masked = (logits < 0).unsqueeze(2)  # (B, Q, 1, H, W)
    # Changing pixels masked for *every* non-empty query leaves those queries unchanged.
    masked_all = masked[:, 1:].all(dim=1)  # (B, 1, H, W)
    if not masked_all.any():
        logits[:, 1:, 0, 0] = -1.0
        masked_all = (logits[:, 1:] < 0).unsqueeze(2).all(dim=1)
        out = layer(tgt, memory, logits, pos, query_pos)
    noise = torch.randn_like(memory) * masked_all
    out2 = layer(tgt, memory + noise, logits, pos, query_pos)
    torch.testing.assert_close(out2[:, 1:], out[:, 1:])
    assert not torch.allclose(out2[:, 0], out[:, 0])  # the empty-mask query sees everything


@torch.no_grad()
def test_decoder_shapes():
    cfg = TransformerDecoderConfig(
        hidden_dim=32, num_queries=6, num_heads=4, dim_feedforward=64, num_layers=3
    )
    dec = Mask2FormerDecoder(8, 16, 5, cfg).eval()
    feats = [torch.randn(1, 8, 2, 4), torch.randn(1, 8, 4, 8), torch.randn(1, 8, 8, 16)]
    out = dec(feats, torch.randn(1, 16, 16, 32))
    assert out["pred_logits"].shape == (1, 6, 6)
    assert out["pred_masks"].shape == (1, 6, 16, 32)
    assert len(out["aux_outputs"]) == 3
    assert all(isinstance(m, MaskedCrossAttentionLayer) for m in dec.transformer_cross_attention_layers)


def test_allowed_mask_is_the_complement_with_the_empty_row_rule():
    logits = torch.tensor([[[1.0, -1.0, 0.0], [-1.0, -2.0, -3.0]]])
    allowed = mask2former_allowed(logits)
    assert allowed.shape == (1, 1, 2, 3)
    assert allowed[0, 0].tolist() == [[True, False, True], [True, True, True]]
    assert torch.equal(allowed[0, 0], ~mask2former_attention_mask(logits, 1)[0])


@torch.no_grad()
def test_sdpa_layer_matches_the_multihead_attention_layer():
    mha = MaskedCrossAttentionLayer(16, 4).eval()
    sdpa = SDPAMaskedCrossAttentionLayer(16, 4).eval()
    sdpa.load_state_dict(mha.state_dict())
    tgt, memory, logits, pos, query_pos = _inputs()
    logits[0, 1] = -1.0  # an empty query attends everywhere in both
    logits[1, :, :2] = -1.0  # some pixels masked for every query
    torch.testing.assert_close(
        sdpa(tgt, memory, logits, pos, query_pos),
        mha(tgt, memory, logits, pos, query_pos),
        atol=1e-5,
        rtol=1e-5,
    )


@torch.no_grad()
def test_sdpa_decoder_matches_the_mha_decoder():
    cfg = TransformerDecoderConfig(
        hidden_dim=32, num_queries=6, num_heads=4, dim_feedforward=64, num_layers=3
    )
    torch.manual_seed(0)
    mha = Mask2FormerDecoder(8, 16, 5, cfg).eval()
    sdpa = Mask2FormerDecoder(8, 16, 5, cfg, attention="sdpa").eval()
    sdpa.load_state_dict(mha.state_dict())
    feats = [torch.randn(1, 8, 2, 4), torch.randn(1, 8, 4, 8), torch.randn(1, 8, 8, 16)]
    mask_features = torch.randn(1, 16, 16, 32)
    a, b = mha(feats, mask_features), sdpa(feats, mask_features)
    torch.testing.assert_close(b["pred_masks"], a["pred_masks"], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="attention"):
        Mask2FormerDecoder(8, 16, 5, cfg, attention="flash")
