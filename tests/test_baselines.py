import torch

from pem.baselines import Mask2FormerDecoder, MaskedCrossAttentionLayer, mask2former_attention_mask
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
