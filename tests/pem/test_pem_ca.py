import pytest
import torch
import torch.nn.functional as F

from pem.ops.prototype import gather_prototypes, mask_bias, masked_similarity, select_prototypes
from pem.pem_ca import PEMCrossAttention


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


def _frozen_old_selection(tokens, queries, mask_logits, num_heads):
    """The selection as it was before the (B, heads, Q, N) rework, frozen here as the reference:
    (B, h, N, Q) similarity, boolean ``where`` to ``-inf``, argmax over the token axis."""
    b, n, c = tokens.shape
    q = queries.shape[1]
    d = c // num_heads
    tokens_h = tokens.reshape(b, n, num_heads, d).transpose(1, 2)
    queries_h = queries.reshape(b, q, num_heads, d).transpose(1, 2)
    similarity = torch.matmul(tokens_h, queries_h.transpose(2, 3))  # (B, h, N, Q)
    excluded = (mask_logits < 0).transpose(1, 2)
    all_excluded = excluded.flatten(1).all(dim=1).reshape(b, 1, 1)
    excluded = excluded & ~all_excluded
    similarity = torch.where(excluded.unsqueeze(1), float("-inf"), similarity)
    return similarity.argmax(dim=2)  # (B, h, Q)


def _crafted_masks(b, q, n, gen):
    """Random masks plus the edge cases: empty queries, a full query, an all-empty image,
    a single allowed pixel (first, last), and logits of exactly 0 (kept: only < 0 excludes)."""
    mask = torch.randn(b, q, n, generator=gen)
    mask[0, 0] = -1.0  # one empty query among non-empty ones -> token 0
    mask[0, 1] = 1.0  # nothing excluded
    mask[0, 2] = -1.0
    mask[0, 2, -1] = 0.5  # only the last pixel allowed
    mask[0, 3] = -1.0
    mask[0, 3, 0] = 0.0  # only the first pixel allowed (0 is not < 0)
    if b > 1:
        mask[1] = -1e-7  # every query empty: exclusion switched off for this image
    if b > 2:
        mask[2] = (torch.rand(q, n, generator=gen) < 0.02).float() * 2 - 1  # sparse masks
    return mask


@pytest.mark.parametrize("block", [1, 4, 64])
@pytest.mark.parametrize("chunk", [1, 5, 7, 2048])
@pytest.mark.parametrize("n", [12, 40])
def test_selection_matches_frozen_old_code(n, chunk, block):
    gen = torch.Generator().manual_seed(n * 100 + chunk)
    b, q, c, heads = 3, 9, 16, 4
    tokens = F.normalize(torch.randn(b, n, c, generator=gen), dim=-1)
    queries = F.normalize(torch.randn(b, q, c, generator=gen), dim=-1)
    mask = _crafted_masks(b, q, n, gen)
    old = _frozen_old_selection(tokens, queries, mask, heads)
    assert torch.equal(select_prototypes(tokens, queries, mask, heads, chunk=chunk, block=block), old)
    assert torch.equal(masked_similarity(tokens, queries, mask, heads).argmax(dim=-1), old)
    assert (old[0, :, 0] == 0).all()  # empty query -> top-left token
    assert (old[0, :, 2] == n - 1).all() and (old[0, :, 3] == 0).all()


def test_selection_ties_pick_the_first_token_across_chunks():
    # Duplicated tokens give exact ties; the first copy must win whichever chunk it falls in.
    gen = torch.Generator().manual_seed(1)
    base = F.normalize(torch.randn(1, 6, 8, generator=gen), dim=-1)
    tokens = torch.cat([base, base, base], dim=1)  # token i, i + 6 and i + 12 are equal
    queries = F.normalize(torch.randn(1, 5, 8, generator=gen), dim=-1)
    mask = torch.randn(1, 5, 18, generator=gen)
    mask[0, 0, :6] = -1.0  # query 0 may not use the first copies: the second copy wins
    mask[0, 1] = 0.0  # everything allowed
    old = _frozen_old_selection(tokens, queries, mask, 2)
    for chunk in (1, 4, 6, 18):
        for block in (1, 2, 3, 6):  # ties inside a block, across blocks and across chunks
            assert torch.equal(select_prototypes(tokens, queries, mask, 2, chunk=chunk, block=block), old)
    assert (old[0, :, 1] < 6).all()


def test_selection_nan_scores_pick_the_first_nan_as_argmax_does():
    # torch.argmax counts NaN as the maximum and returns the first one; so must the blocks and
    # chunks of the eager path (the batched / exported path is the reference: NaN + bias is NaN).
    gen = torch.Generator().manual_seed(4)
    tokens = F.normalize(torch.randn(1, 24, 8, generator=gen), dim=-1)
    tokens[0, 9, 1] = float("nan")  # head 0 (channels 0-3) of token 9
    tokens[0, 17, 0] = float("nan")
    tokens[0, 21, 6] = float("nan")  # head 1 only
    queries = F.normalize(torch.randn(1, 5, 8, generator=gen), dim=-1)
    mask = torch.full((1, 5, 24), 1.0)
    mask[0, 0, 2] = -1.0  # exclusions elsewhere do not matter
    reference = masked_similarity(tokens, queries, mask, 2).argmax(dim=-1)
    assert (reference[0, 0] == 9).all() and (reference[0, 1] == 21).all()
    for chunk in (4, 8, 10, 24):
        for block in (1, 2, 4, 8):
            chosen = select_prototypes(tokens, queries, mask, 2, chunk=chunk, block=block)
            assert torch.equal(chosen, reference)


@torch.no_grad()
def test_selection_matches_frozen_old_code_at_cityscapes_1_32():
    # Real width: 256 channels, 8 heads, 100 queries, 32x64 tokens (1/32 of 1024x2048).
    gen = torch.Generator().manual_seed(3)
    layer = PEMCrossAttention(256, 8).eval()
    memory, pos = torch.randn(2, 256, 32, 64, generator=gen), torch.randn(2, 256, 32, 64, generator=gen)
    tokens = F.normalize(layer.feature_proj(memory + pos), dim=-1)
    queries = F.normalize(torch.randn(2, 100, 256, generator=gen), dim=-1)
    mask = torch.randn(2, 100, 2048, generator=gen)
    mask[0, :10] = -1.0
    old = _frozen_old_selection(tokens, queries, mask, 8)
    assert torch.equal(select_prototypes(tokens, queries, mask, 8), old)
    assert torch.equal(masked_similarity(tokens, queries, mask, 8).argmax(dim=-1), old)


def test_mask_bias_rules():
    mask = torch.randn(2, 3, 6)
    mask[0, 2] = -1.0
    mask[1] = -5.0
    bias = mask_bias(mask)
    assert set(bias.unique().tolist()) <= {0.0, float("-inf")}
    assert torch.isinf(bias[0, 2]).all()  # the empty query sees nothing
    assert (bias[1] == 0).all()  # whole image empty -> no masking at all
    assert torch.equal(torch.isinf(bias[0, :2]), mask[0, :2] < 0)
    tokens = F.normalize(torch.randn(2, 6, 8), dim=-1)
    queries = F.normalize(torch.randn(2, 3, 8), dim=-1)
    s = masked_similarity(tokens, queries, mask, num_heads=2)
    assert s.shape == (2, 2, 3, 6)
    assert (s.argmax(dim=-1)[0, :, 2] == 0).all()  # argmax of an all -inf row is the top-left token


def test_gather_prototypes_values_and_gradient():
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, 7, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.randint(0, 7, (2, 3, 4), generator=gen)  # 3 heads of 2 channels, 4 queries
    out = gather_prototypes(tokens, index)
    assert out.shape == (2, 4, 6)
    for b in range(2):
        for h in range(3):
            for q in range(4):
                assert torch.equal(out[b, q, 2 * h : 2 * h + 2], tokens[b, index[b, h, q], 2 * h : 2 * h + 2])
    torch.autograd.gradcheck(lambda t: gather_prototypes(t, index), (tokens,))


def test_selection_has_no_gradient_but_tokens_do():
    layer = PEMCrossAttention(16, 4)
    tgt, memory = torch.randn(1, 5, 16), torch.randn(1, 16, 3, 4, requires_grad=True)
    out = layer(tgt, memory, torch.randn(1, 5, 3, 4), torch.randn(1, 16, 3, 4), torch.randn(1, 5, 16))
    out.sum().backward()
    assert memory.grad is not None and memory.grad.abs().sum() > 0


def test_selection_exports_without_data_dependent_ops():
    class M(torch.nn.Module):
        def forward(self, t, q, m):
            return gather_prototypes(t, select_prototypes(t, q, m, 2))

    ep = torch.export.export(M(), (torch.randn(1, 6, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 6)))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert any("argmax" in t for t in targets) and any("gather" in t for t in targets), targets
    assert not any("nonzero" in t or "index_put" in t or "masked_select" in t for t in targets), targets


def test_select_prototypes_rejects_bad_shapes():
    with pytest.raises(ValueError, match="disagree"):
        select_prototypes(torch.randn(1, 6, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 5), 2)
    with pytest.raises(ValueError, match="heads"):
        select_prototypes(torch.randn(1, 6, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 6), 3)
