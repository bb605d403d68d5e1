import pytest
import torch
import torch.nn.functional as F

from pem.ops.prototype import prototype_gather, prototype_gather_reference
from pem.pem_ca import PEMCrossAttention, masked_similarity


def _reference_pem_ca(layer: PEMCrossAttention, tgt, memory, mask_logits, pos, query_pos):
    """Literal per-(image, head, query) transcription of the official algorithm."""
    b, q, c = tgt.shape
    heads = layer.num_heads
    d = c // heads
    z = layer.feature_proj.to_query_3x3(layer.feature_proj.bn(memory + pos))
    keys = layer.feature_proj.out(z.flatten(2).transpose(1, 2))  # (B, N, C)
    keys = keys / keys.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    queries = layer.query_proj(tgt + query_pos)
    queries = queries / queries.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = keys.shape[1]
    masked = mask_logits.flatten(2) < 0  # (B, Q, N)
    prototypes = torch.zeros(b, q, c)
    for bi in range(b):
        reset = bool(masked[bi].all())
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            for qi in range(q):
                best, best_n = None, 0
                for ni in range(n):
                    if masked[bi, qi, ni] and not reset:
                        continue
                    s = float(keys[bi, ni, sl] @ queries[bi, qi, sl])
                    if best is None or s > best:
                        best, best_n = s, ni
                prototypes[bi, qi, sl] = keys[bi, best_n, sl]  # all masked -> token 0
    g = layer.proj(prototypes * queries)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)  # over the query axis
    return tgt + layer.final(g * layer.alpha + prototypes)


def test_pem_ca_matches_literal_reference():
    torch.manual_seed(0)
    b, q, c, h, w = 2, 5, 16, 3, 4
    layer = PEMCrossAttention(c, num_heads=4).eval()
    with torch.no_grad():
        layer.alpha.uniform_(0.5, 1.5)
        layer.feature_proj.bn.running_mean.uniform_(-0.2, 0.2)
    tgt, query_pos = torch.randn(b, q, c), torch.randn(b, q, c)
    memory, pos = torch.randn(b, c, h, w), torch.randn(b, c, h, w)
    mask = torch.randn(b, q, h, w)
    mask[0, 1] = -1.0  # one empty query among non-empty ones: all -inf column -> token 0
    mask[1] = -1.0  # every query empty in image 1: exclusion switched off
    with torch.no_grad():
        out = layer(tgt, memory, mask, pos, query_pos)
        ref = _reference_pem_ca(layer, tgt, memory, mask, pos, query_pos)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_masking_rules():
    tokens = F.normalize(torch.randn(2, 6, 8), dim=-1)
    queries = F.normalize(torch.randn(2, 3, 8), dim=-1)
    mask = torch.randn(2, 3, 6)
    mask[0, 2] = -1.0
    mask[1] = -5.0
    s = masked_similarity(tokens, queries, mask, num_heads=2)
    assert s.shape == (2, 2, 6, 3)
    assert torch.isinf(s[0, :, :, 2]).all()  # the empty query sees nothing
    assert torch.isfinite(s[1]).all()  # whole image empty -> no masking at all
    assert torch.equal(torch.isinf(s[0, 0, :, :2]), (mask[0, :2] < 0).T)
    idx = s.argmax(dim=2)
    assert (idx[0, :, 2] == 0).all()  # argmax of an all -inf column is the top-left token


def test_prototype_gather_op_values_and_gradient():
    sim = torch.randn(2, 3, 7, 4)
    sim[0, 1, :, 2] = float("-inf")
    feats = torch.randn(2, 3, 7, 5, dtype=torch.float64, requires_grad=True)
    out = prototype_gather(sim, feats)
    ref = prototype_gather_reference(sim, feats)
    assert torch.equal(out, ref)
    assert torch.equal(out[0, 1, 2], feats[0, 1, 0])
    grad = torch.randn_like(out)
    (g_op,) = torch.autograd.grad(out, feats, grad)
    (g_ref,) = torch.autograd.grad(ref, feats, grad)
    assert torch.equal(g_op, g_ref)
    torch.autograd.gradcheck(lambda f: prototype_gather(sim.double(), f), (feats,))


def test_prototype_gather_exports_as_its_own_op():
    class M(torch.nn.Module):
        def forward(self, s, f):
            return prototype_gather(s, f)

    ep = torch.export.export(M(), (torch.randn(1, 2, 6, 3), torch.randn(1, 2, 6, 4)))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert any("prototype_gather" in t for t in targets), targets
    assert not any("nonzero" in t or "index_put" in t for t in targets)


def test_prototype_gather_rejects_bad_shapes():
    with pytest.raises(ValueError, match="disagree"):
        prototype_gather(torch.randn(1, 2, 6, 3), torch.randn(1, 2, 5, 4))
