"""Eager CPU hot spots of a PEM-CA layer and of the prediction heads: each alternative side by side.

Issue 13 asked to look at the token projection (BN + depth-wise 3x3 + Linear: channels-last?),
the per-head similarity GEMM (K = 32 per head), the prototype arg-max and its mask, and the
prediction heads' mask einsum. Each row times the current form against its alternatives on the
same tensors (1024x2048 input, 256-d, 8 heads, 100 queries, batch 1, 1 thread), interleaved,
medians, and checks that the alternatives give the same result (exactly for the selection
pieces, to float rounding for the GEMM / conv re-layouts):

* ``argmax``: ``max(dim=-1)`` with indices (a scalar loop on the CPU) vs the two-step block
  arg-max of ``pem.ops.prototype`` (vectorised ``amax`` per 64 tokens, then one block per row).
* ``bias``: the 0 / ``-inf`` mask bias as a boolean ``where`` vs as integer bits.
* ``similarity``: 8 per-head ``addmm`` (K = 32) vs one ``baddbmm`` over the heads.
* ``dwconv``: the depth-wise 3x3 on NCHW vs channels-last (with and without the conversion).
* ``linear``: the token Linear on the transposed (B, N, C) view vs a contiguous copy vs W @ x.
* ``einsum``: the mask einsum ``bqc,bchw->bqhw`` at 1/4 vs ``mm``.

The process applies the same malloc policy as the CLI (``PEM_DEPLOY_MALLOC``, default tuned).
Usage: ``python benchmarks/pem_ca_hotspots.py [--runs 15] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from common import cpu_description, interleaved

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pem, not an installed one

C, Q, HEADS, D = 256, 100, 8, 32
CHUNK = 2048


def _same(a: object, b: object, exact: bool) -> bool:
    if isinstance(a, tuple):
        return all(_same(x, y, exact) for x, y in zip(a, b))  # type: ignore[arg-type]
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    if exact:
        return torch.equal(a, b)
    return torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-4)


def _row(name: str, fns: dict[str, Callable[[], object]], runs: int, exact: bool) -> dict[str, object]:
    results = {k: fn() for k, fn in fns.items()}
    first = next(iter(results.values()))
    agree = {k: _same(first, v, exact) for k, v in results.items()}
    med = interleaved(fns, runs, warmup=2)
    base = next(iter(med))
    row = {
        **{f"{k}_ms": round(v, 3) for k, v in med.items()},
        **{f"{k}_vs_{base}": round(v / med[base], 3) for k, v in med.items() if k != base},
        "same_result": agree,
    }
    cells = "  ".join(f"{k} {v:8.3f} ms" for k, v in med.items())
    print(f"{name:28s} {cells}   same: {all(agree.values())}", flush=True)
    return row


def _scores(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tokens = torch.nn.functional.normalize(torch.randn(n, C, generator=gen), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(Q, C, generator=gen), dim=-1)
    logits = torch.randn(Q, n, generator=gen)
    return tokens, queries, logits


def measure(runs: int) -> dict[str, object]:
    from pem.malloc import apply_malloc_policy

    policy = apply_malloc_policy()  # the policy the CLI applies to eager work
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    table: dict[str, object] = {}
    with torch.inference_mode():  # the steps draw from ``gen`` in this order
        _selection_rows(table, gen, runs)
        _projection_rows(table, gen, runs)
        _einsum_row(table, gen, runs)
    return {
        "machine": {**cpu_description(), "torch": torch.__version__, "malloc_policy": policy},
        "rows": table,
    }


def _selection_rows(table: dict[str, object], gen: torch.Generator, runs: int) -> None:
    """Prototype selection: arg-max, mask bias and the per-head similarity GEMM."""
    from pem.ops.prototype import DEFAULT_BLOCK, _chunk_argmax

    # One chunk of the eager selection (the same at every level: 2048 tokens).
    tokens, queries, logits = _scores(CHUNK, gen)
    keys = tokens
    bias = torch.where(logits < 0, float("-inf"), 0.0)
    scores = torch.empty(HEADS, Q, CHUNK)
    for h in range(HEADS):
        cols = slice(h * D, (h + 1) * D)
        torch.addmm(bias, queries[:, cols], keys[:, cols].t(), out=scores[h])
    table["argmax (8 x 100 x 2048)"] = _row(
        "argmax (8 x 100 x 2048)",
        {
            "max_indices": lambda: scores.max(dim=-1),
            "block": lambda: _chunk_argmax(scores, DEFAULT_BLOCK),
        },
        runs,
        exact=True,
    )
    bits = torch.empty(Q, CHUNK, dtype=torch.int32)

    def bias_bits() -> torch.Tensor:
        torch.lt(logits, 0, out=bits)
        return bits.mul_(-(1 << 23)).view(torch.float32)

    table["mask bias (100 x 2048)"] = _row(
        "mask bias (100 x 2048)",
        {"where": lambda: torch.where(logits < 0, float("-inf"), 0.0), "int_bits": bias_bits},
        runs,
        exact=True,
    )
    q_heads = queries.view(Q, HEADS, D).transpose(0, 1)  # (h, Q, D)
    k_heads = keys.view(CHUNK, HEADS, D).permute(1, 2, 0)  # (h, D, N)
    out = torch.empty(HEADS, Q, CHUNK)

    def per_head() -> torch.Tensor:
        for h in range(HEADS):
            cols = slice(h * D, (h + 1) * D)
            torch.addmm(bias, queries[:, cols], keys[:, cols].t(), out=out[h])
        return out.clone()

    table["similarity GEMM (K = 32)"] = _row(
        "similarity GEMM (K = 32)",
        {"addmm_per_head": per_head, "baddbmm": lambda: torch.baddbmm(bias, q_heads, k_heads)},
        runs,
        exact=False,
    )


def _projection_rows(table: dict[str, object], gen: torch.Generator, runs: int) -> None:
    """The local representation's depth-wise conv and token Linear at each level (1024x2048)."""
    from pem.pem_ca import LocalRepresentation

    proj = LocalRepresentation(C).eval()
    for stride in (32, 16, 8):
        h, w = 1024 // stride, 2048 // stride
        x = torch.randn(1, C, h, w, generator=gen)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        conv = proj.to_query_3x3
        table[f"dwconv 1/{stride}"] = _row(
            f"dwconv 1/{stride}",
            {
                "nchw": lambda conv=conv, x=x: conv(x),
                "channels_last": lambda conv=conv, x_cl=x_cl: conv(x_cl),
                "to_cl_and_conv": lambda conv=conv, x=x: conv(
                    x.contiguous(memory_format=torch.channels_last)
                ),
            },
            runs,
            exact=False,
        )
        flat = x.flatten(2)  # (1, C, N)
        lin = proj.out
        table[f"token Linear 1/{stride}"] = _row(
            f"token Linear 1/{stride}",
            {
                "transposed_view": lambda lin=lin, flat=flat: lin(flat.transpose(1, 2)),
                "contiguous_copy": lambda lin=lin, flat=flat: lin(flat.transpose(1, 2).contiguous()),
                "w_at_x": lambda lin=lin, flat=flat: torch.addmm(
                    lin.bias.unsqueeze(1), lin.weight, flat[0]
                ).t()[None],
            },
            runs,
            exact=False,
        )


def _einsum_row(table: dict[str, object], gen: torch.Generator, runs: int) -> None:
    """The mask einsum at 1/4 resolution."""
    embed = torch.randn(1, Q, C, generator=gen)
    features = torch.randn(1, C, 256, 512, generator=gen)
    table["mask einsum (1/4)"] = _row(
        "mask einsum (1/4)",
        {
            "einsum": lambda: torch.einsum("bqc,bchw->bqhw", embed, features),
            "mm": lambda: torch.mm(embed[0], features[0].flatten(1)).view(1, Q, 256, 512),
        },
        max(3, runs // 3),
        exact=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args()
    results = measure(args.runs)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
