"""Prototype selection and gather of PEM-CA: per (image, head, query), the most similar pixel token.

The similarity is laid out (B, heads, Q, N) so that the (B, Q, N) mask needs no transpose and the
argmax runs over the contiguous last axis, and the mask enters as an additive float bias of the
similarity GEMM (0 where a pixel may be chosen, ``-inf`` where it may not) instead of a boolean
``where`` over the big tensor. With a bias of exactly 0 or ``-inf`` the masked scores equal the
old ``where`` ones bit for bit (``s + 0 == s``, ``s + -inf == -inf`` for finite ``s``), so the
argmax (first index on ties; an all ``-inf`` row gives token 0) picks the same token.

Two implementations of the selection, same result:

* :func:`masked_similarity` + ``argmax``: one batched GEMM + bias + ArgMax. Used when exporting or
  compiling (it becomes ONNX ``MatMul`` + ``Add`` + ``ArgMax``: nothing data-dependent) and on
  accelerators.
* the eager CPU path of :func:`select_prototypes`: the same GEMM + bias, chunked over the tokens
  and heads into one reused cache-sized buffer with a running (max, first index), so the
  (B, heads, Q, N) tensor (105 MB at 1/8 of 1024x2048) is never allocated, and an arg-max in
  two steps (vectorised ``amax`` per block of 64 tokens, then the indexed reduction over one
  block per row), because ``max`` with indices is a scalar loop on the CPU. It is 2-5x faster
  on one CPU core (no page faults on fresh large buffers, nothing leaves the cache).

The gather (:func:`gather_prototypes`) is a plain ``torch.gather`` (ONNX ``GatherElements``) from
the (B, N, heads, D) view of the tokens: differentiable w.r.t. the tokens, the selection is not.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Tokens per chunk of the eager CPU selection: the (Q, chunk) score and bias buffers stay in L2.
DEFAULT_CHUNK = 2048
# Tokens per block of the two-step arg-max (vectorised block maxima, then one block per row).
DEFAULT_BLOCK = 64
# Integer type of each float type's width and the bit pattern of -inf in it (sign, all-ones
# exponent, zero mantissa), for building the 0 / -inf bias as integers.
_BIAS_BITS: dict[torch.dtype, tuple[torch.dtype, int]] = {
    torch.float32: (torch.int32, -(1 << 23)),  # 0xFF800000
    torch.float64: (torch.int64, -(1 << 52)),  # 0xFFF0000000000000
    torch.float16: (torch.int16, -(1 << 10)),  # 0xFC00
    torch.bfloat16: (torch.int16, -(1 << 7)),  # 0xFF80
}


def mask_bias(mask_logits: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Additive bias of the prototype similarity: 0 = may be chosen, ``-inf`` = excluded.

    Args:
        mask_logits: (B, Q, N) previous mask logits; a pixel with logit < 0 is excluded.
        dtype: of the bias (default: that of ``mask_logits``).

    Returns:
        (B, Q, N). Exclusion is switched off for an image only when every query's mask is empty
        there (official rule: ``max < 0`` over all its logits); one empty query among non-empty
        ones keeps an all ``-inf`` row (its argmax is token 0).
    """
    logits = mask_logits.detach()
    excluded = logits < 0
    reset = logits.amax(dim=(1, 2), keepdim=True) < 0  # (B, 1, 1): every query empty
    excluded = excluded & ~reset
    zero = torch.zeros((), dtype=dtype or logits.dtype, device=logits.device)
    return torch.where(excluded, float("-inf"), zero)


def masked_similarity(tokens: Tensor, queries: Tensor, mask_logits: Tensor, num_heads: int) -> Tensor:
    """Per-head similarity plus the mask bias (masked pixels are ``-inf``), batched.

    Args:
        tokens: (B, N, C) L2-normalised pixel tokens.
        queries: (B, Q, C) L2-normalised queries.
        mask_logits: (B, Q, N) previous mask logits (see :func:`mask_bias`).
        num_heads: C is split into this many contiguous heads.

    Returns:
        (B, heads, Q, N) scores.
    """
    b, n, c = tokens.shape
    q = queries.shape[1]
    d = c // num_heads
    queries_h = queries.reshape(b, q, num_heads, d).transpose(1, 2)  # (B, h, Q, D)
    tokens_t = tokens.reshape(b, n, num_heads, d).permute(0, 2, 3, 1)  # (B, h, D, N)
    bias = mask_bias(mask_logits, tokens.dtype).unsqueeze(1)  # (B, 1, Q, N)
    return torch.matmul(queries_h, tokens_t) + bias


def _chunk_argmax(scores: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Maximum and first index of it over the last axis of (H, Q, W) scores.

    ``torch.max(dim=...)`` with indices is a scalar loop on the CPU (~13x slower than ``amax``),
    so the index is found in two steps: the vectorised ``amax`` of each ``block`` of tokens, the
    first block holding the row maximum, then the first maximum inside that block. The first
    occurrence of the row maximum lies in the first block whose maximum equals it, so this is
    ``argmax``'s index exactly, ties and NaN included (NaN propagates through ``amax`` and counts
    as the maximum, as in ``torch.argmax``). W must be a multiple of ``block``.
    """
    heads, q, width = scores.shape
    blocks = scores.view(heads, q, width // block, block)
    best, first_block = blocks.amax(dim=-1).max(dim=-1)  # (H, Q): the small reduction has indices
    inside = blocks.gather(2, first_block[..., None, None].expand(heads, q, 1, block)).squeeze(2)
    return best, first_block * block + inside.argmax(dim=-1)


def _select_chunked(
    tokens: Tensor, queries: Tensor, mask_logits: Tensor, num_heads: int, chunk: int, block: int
) -> Tensor:
    """Eager CPU selection: per (image, token chunk), the bias once, one GEMM per head into one
    reused (heads, Q, chunk) buffer, and one block-wise arg-max for all heads."""
    b, n, c = tokens.shape
    q = queries.shape[1]
    d = c // num_heads
    chunk = max(1, min(chunk, n))
    index = torch.zeros(b, num_heads, q, dtype=torch.long, device=tokens.device)
    scores_buf = torch.empty(num_heads * q * chunk, dtype=tokens.dtype, device=tokens.device)
    bias_bits = _BIAS_BITS.get(tokens.dtype)
    bias_buf = torch.empty(q * chunk, dtype=bias_bits[0] if bias_bits else tokens.dtype, device=tokens.device)
    logits = mask_logits.detach()
    for bi in range(b):
        reset = bool(logits[bi].amax(dim=-1).amax() < 0)  # every query empty: no exclusion here
        best: Tensor | None = None
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            width = stop - start
            bias = bias_buf[: q * width].view(q, width)
            if reset:
                bias.zero_()
            elif bias_bits:
                # (logit < 0) * bits of -inf, read as floats: exactly 0.0 or -inf, 5x faster
                # than a boolean where / masked_fill (which are scalar loops on the CPU).
                torch.lt(logits[bi, :, start:stop], 0, out=bias)
                bias.mul_(bias_bits[1])
            else:
                torch.where(logits[bi, :, start:stop] < 0, float("-inf"), 0.0, out=bias)
            if bias_bits:
                bias = bias.view(tokens.dtype)
            scores = scores_buf[: num_heads * q * width].view(num_heads, q, width)
            keys = tokens[bi, start:stop]
            for h in range(num_heads):
                cols = slice(h * d, (h + 1) * d)
                torch.addmm(bias, queries[bi, :, cols], keys[:, cols].t(), out=scores[h])
            if width % block == 0:
                value, arg = _chunk_argmax(scores, block)
            else:  # a ragged last chunk: the plain reduction (first index of the maximum)
                value, arg = scores.max(dim=-1)
            if best is None:
                best = value
                index[bi] = arg
                continue
            # Later chunks win only when strictly better (first index on ties), or with a
            # NaN where there was none yet (torch.argmax treats NaN as the maximum).
            better = (value > best) | (value.isnan() & ~best.isnan())
            best = torch.where(better, value, best)
            index[bi] = torch.where(better, arg + start, index[bi])
    return index


def select_prototypes(
    tokens: Tensor,
    queries: Tensor,
    mask_logits: Tensor,
    num_heads: int,
    chunk: int = DEFAULT_CHUNK,
    block: int = DEFAULT_BLOCK,
) -> Tensor:
    """Index of the prototype token per (image, head, query): argmax of :func:`masked_similarity`.

    Args:
        tokens: (B, N, C) L2-normalised pixel tokens.
        queries: (B, Q, C) L2-normalised queries.
        mask_logits: (B, Q, N) previous mask logits (see :func:`mask_bias`).
        num_heads: C is split into this many contiguous heads.
        chunk: tokens per chunk of the eager CPU path.
        block: tokens per block of the eager CPU path's two-step arg-max.

    Returns:
        (B, heads, Q) int64. Not differentiable (the selection has no gradient).
    """
    if tokens.dim() != 3 or queries.dim() != 3 or mask_logits.dim() != 3:
        raise ValueError(
            f"select_prototypes expects (B, N, C), (B, Q, C), (B, Q, N); got {tuple(tokens.shape)}, "
            f"{tuple(queries.shape)}, {tuple(mask_logits.shape)}"
        )
    b, n, c = tokens.shape
    if queries.shape[0] != b or queries.shape[2] != c or mask_logits.shape != (b, queries.shape[1], n):
        raise ValueError(
            f"select_prototypes: tokens {tuple(tokens.shape)}, queries {tuple(queries.shape)} and mask "
            f"{tuple(mask_logits.shape)} disagree on (B, Q, N, C)"
        )
    if c % num_heads:
        raise ValueError(f"select_prototypes: {c} channels do not split into {num_heads} heads")
    tokens, queries = tokens.detach(), queries.detach()  # the selection carries no gradient
    tracing = torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()
    if tracing or tokens.device.type != "cpu":
        return masked_similarity(tokens, queries, mask_logits, num_heads).argmax(dim=-1)
    return _select_chunked(tokens, queries, mask_logits, num_heads, chunk, max(1, block))


def gather_prototypes(tokens: Tensor, index: Tensor) -> Tensor:
    """Gather each head's slice of each query's prototype.

    Args:
        tokens: (B, N, C) pixel tokens.
        index: (B, heads, Q) token index per head and query (:func:`select_prototypes`).

    Returns:
        (B, Q, C) prototypes: channels of head h come from token ``index[b, h, q]``.
    """
    b, n, c = tokens.shape
    heads, q = index.shape[1], index.shape[2]
    d = c // heads
    gather_index = index.transpose(1, 2).unsqueeze(-1).expand(b, q, heads, d)  # (B, Q, h, D)
    return torch.gather(tokens.reshape(b, n, heads, d), 1, gather_index).reshape(b, q, c)
