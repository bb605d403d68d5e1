"""PEM-CA vs Mask2Former masked cross-attention (MHA and SDPA), and the whole decoders.

Issue 13 goals: one PEM-CA layer <= 0.5x the time of the ``nn.MultiheadAttention`` Mask2Former
layer and <= 0.7x the ``F.scaled_dot_product_attention`` one, at 1/32, 1/16 and 1/8 of 1024x2048
(N = 2048, 8192, 32768 tokens; 256-d, 8 heads, 100 queries, batch 1, 1 thread), in eager PyTorch
and in onnxruntime (each layer / decoder exported alone, static shapes); the whole 6-layer
decoder <= 0.6x the Mask2Former-style decoders. Inputs are random: features, positions and
previous mask logits (about half of the pixels masked per query). The decoders are
:class:`pem.transformer_decoder.TransformerDecoder` (PEM) and
:class:`pem.baselines.Mask2FormerDecoder` (``mha`` and ``sdpa``; identical but for the
cross-attention) on the same multi-scale features (128 channels) and mask features (256 at 1/4).

Eval mode, inference mode, batch 1, 1 thread, the variants interleaved run by run, median after
warm-up; ``--repeat`` runs the whole measurement again (default twice) and records every round.
The process applies the malloc policy the ``pem-deploy`` commands apply to eager work
(``PEM_DEPLOY_MALLOC``, default ``tuned``: glibc keeps large freed blocks, ``pem/malloc.py``).
``--allocators system,tuned,tcmalloc,jemalloc`` reruns the script once per allocator (glibc's
defaults, glibc tuned, or ``LD_PRELOAD`` of the system's libtcmalloc_minimal / libjemalloc,
skipped with a reason when absent; ``none`` is an alias of ``system``) and prints the ratios
side by side.

Usage: ``python benchmarks/decoder_vs_mask2former.py [--runs 9] [--no-ort] [--out results.json]
[--allocators system,tuned,tcmalloc]``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from common import cpu_description, interleaved, ort_session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pem, not an installed one

LAYERS = ("pem_ca", "mha", "sdpa")
DECODERS = ("pem", "mha", "sdpa")
ALLOCATOR_LIBS = {"tcmalloc": "libtcmalloc_minimal.so*", "jemalloc": "libjemalloc.so*"}


def allocator_library(name: str) -> str | None:
    """Path of the shared library of ``name`` (tcmalloc / jemalloc) on this machine, or None."""
    for root in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        found = sorted(glob.glob(os.path.join(root, ALLOCATOR_LIBS[name])))
        if found:
            return found[0]
    return None


def machine(malloc_policy: str) -> dict[str, object]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        **cpu_description(),
        "torch": torch.__version__,
        "threads": 1,
        "load_average": [round(x, 2) for x in load] if load else None,
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "malloc_policy": malloc_policy,
    }


def export_onnx(module: torch.nn.Module, args: tuple, path: Path) -> None:
    torch.onnx.export(module, args, str(path), dynamo=True, opset_version=19, optimize=True, verbose=False)


class _DecoderOutputs(torch.nn.Module):
    """A decoder returning only its final outputs (intermediate class heads are dead code)."""

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, x32, x16, x8, mask_features):
        out = self.decoder([x32, x16, x8], mask_features)
        return out["pred_logits"], out["pred_masks"]


def _ort_callable(module: torch.nn.Module, args: tuple, tmp: Path, name: str):
    path = tmp / f"{name}.onnx"
    if not path.exists():  # --onnx-dir caches the exports (same seeded weights every run)
        export_onnx(module, args, path)
    sess = ort_session(path)
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    return partial(sess.run, None, feeds)


def _ratios(med: dict[str, float], ours: str, others: tuple[str, ...]) -> dict[str, object]:
    return {
        **{f"{k}_ms": round(v, 2) for k, v in med.items()},
        **{f"ratio_vs_{k}": round(med[ours] / med[k], 4) for k in others},
    }


def measure(args: argparse.Namespace) -> dict[str, object]:
    from pem.baselines import Mask2FormerDecoder, MaskedCrossAttentionLayer, SDPAMaskedCrossAttentionLayer
    from pem.config import TransformerDecoderConfig
    from pem.malloc import apply_malloc_policy
    from pem.pem_ca import PEMCrossAttention
    from pem.transformer_decoder import TransformerDecoder

    malloc_policy = apply_malloc_policy()  # the policy the CLI applies to eager work
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TransformerDecoderConfig()  # 256-d, 8 heads, 100 queries, 6 layers, 3 levels
    c, q = cfg.hidden_dim, cfg.num_queries
    layers = {
        "pem_ca": PEMCrossAttention(c, cfg.num_heads).eval(),
        "mha": MaskedCrossAttentionLayer(c, cfg.num_heads).eval(),
        "sdpa": SDPAMaskedCrossAttentionLayer(c, cfg.num_heads).eval(),
    }
    layers["sdpa"].load_state_dict(layers["mha"].state_dict())
    in_ch, mask_dim = 128, 256
    decoders = {"pem": TransformerDecoder(in_ch, mask_dim, 19, cfg).eval()}
    for kind in ("mha", "sdpa"):
        decoders[kind] = Mask2FormerDecoder(in_ch, mask_dim, 19, cfg, attention=kind).eval()
    decoders["sdpa"].load_state_dict(decoders["mha"].state_dict())
    tgt, query_pos = torch.randn(1, q, c), torch.randn(1, q, c)
    inputs = {}
    for stride in (32, 16, 8):
        h, w = args.height // stride, args.width // stride
        inputs[stride] = (
            tgt,
            torch.randn(1, c, h, w),
            torch.randn(1, q, h, w),
            torch.randn(1, c, h, w),
            query_pos,
        )
    feats = tuple(torch.randn(1, in_ch, args.height // s, args.width // s) for s in (32, 16, 8))
    dec_args = (*feats, torch.randn(1, mask_dim, args.height // 4, args.width // 4))

    ort_fns: dict[tuple, object] = {}
    with tempfile.TemporaryDirectory() as tmp_dir, torch.inference_mode():
        if args.ort:
            tmp = Path(args.onnx_dir or tmp_dir)
            tmp.mkdir(parents=True, exist_ok=True)
            for stride, layer_args in inputs.items():
                for name, layer in layers.items():
                    ort_fns[("layer", stride, name)] = _ort_callable(
                        layer, layer_args, tmp, f"{name}{stride}"
                    )
            for name, dec in decoders.items():
                ort_fns[("decoder", name)] = _ort_callable(_DecoderOutputs(dec), dec_args, tmp, f"dec_{name}")
        rounds = []
        for _ in range(args.repeat):
            rounds.append(_one_round(args, (inputs, layers), (dec_args, decoders), ort_fns))
            _print_round(rounds[-1], len(rounds))
    # Same prototype choices in eager and onnxruntime are checked by the tests; here: outputs agree.
    agreement = {}
    if args.ort:
        for stride in inputs:
            out_ort = ort_fns[("layer", stride, "pem_ca")]()[0]
            with torch.inference_mode():
                out_eager = layers["pem_ca"](*inputs[stride]).numpy()
            agreement[f"1/{stride}"] = float(np.abs(out_ort - out_eager).max())
        print(f"PEM-CA layer, max |onnxruntime - eager|: {agreement}")
    return {
        "pem_ca_ort_vs_eager_max_abs": agreement,
        "machine": machine(malloc_policy),
        "setup": {
            "input": [args.height, args.width],
            "runs": args.runs,
            "decoder_runs": args.decoder_runs,
            "warmup": args.warmup,
            "repeat": args.repeat,
        },
        "rounds": rounds,
    }


def _one_round(
    args: argparse.Namespace,
    layer_case: tuple[dict[int, tuple], dict[str, torch.nn.Module]],
    decoder_case: tuple[tuple, dict[str, torch.nn.Module]],
    ort_fns: dict[tuple, object],
) -> dict[str, object]:
    """One interleaved round: each layer at each stride, then the decoders, eager (and onnxruntime)."""
    inputs, layers = layer_case
    dec_args, decoders = decoder_case
    result: dict[str, object] = {"eager": {}, "onnxruntime": {}}
    for backend in ("eager", "onnxruntime") if args.ort else ("eager",):
        table: dict[str, object] = {}
        for stride, layer_args in inputs.items():
            if backend == "eager":
                fns = {k: partial(m, *layer_args) for k, m in layers.items()}
            else:
                fns = {k: ort_fns[("layer", stride, k)] for k in LAYERS}
            med = interleaved(fns, args.runs, args.warmup)
            table[f"layer 1/{stride}"] = _ratios(med, "pem_ca", ("mha", "sdpa"))
        if backend == "eager":
            fns = {k: partial(_DecoderOutputs(d), *dec_args) for k, d in decoders.items()}
        else:
            fns = {k: ort_fns[("decoder", k)] for k in DECODERS}
        med = interleaved(fns, args.decoder_runs, max(1, args.warmup - 1))
        table["decoder"] = _ratios(med, "pem", ("mha", "sdpa"))
        result[backend] = table
    return result


def _print_round(result: dict[str, object], number: int) -> None:
    print(f"round {number}")
    for backend, table in result.items():
        for row, vals in table.items():
            ms = "  ".join(f"{k[:-3]} {v:8.1f} ms" for k, v in vals.items() if k.endswith("_ms"))
            ratios = "  ".join(f"{k[9:]} {v:.3f}" for k, v in vals.items() if k.startswith("ratio"))
            print(f"  {backend:11s} {row:12s} {ms}   ratio vs {ratios}", flush=True)


def compare_allocators(names: list[str], argv: list[str], out: Path | None) -> dict[str, object]:
    """Rerun this script once per allocator (LD_PRELOAD) and collect the results (written to
    ``out`` after each allocator, so a long run keeps what it measured)."""
    results: dict[str, object] = {}
    for name in names:
        env = {**os.environ}
        env.pop("LD_PRELOAD", None)
        env["PEM_DEPLOY_MALLOC"] = "tuned" if name == "tuned" else "system"
        if name not in ("none", "system", "tuned"):
            lib = allocator_library(name)
            if lib is None:
                results[name] = {"skipped": f"no {ALLOCATOR_LIBS[name]} on this machine"}
                print(f"{name}: skipped (library not found)")
                continue
            env["LD_PRELOAD"] = lib
        with tempfile.NamedTemporaryFile(suffix=".json") as child_out:
            label = env.get("LD_PRELOAD", f"glibc malloc, {env['PEM_DEPLOY_MALLOC']}")
            print(f"=== allocator: {name} ({label})", flush=True)
            subprocess.run([sys.executable, __file__, *argv, "--out", child_out.name], env=env, check=True)
            results[name] = json.loads(Path(child_out.name).read_text())
        if out:
            _write_json(results, out)
    return results


def _write_json(results: dict[str, object], out: Path) -> None:
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--decoder-runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2, help="measure everything this many times")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--no-ort", dest="ort", action="store_false", help="eager PyTorch only")
    parser.add_argument("--allocators", default=None, help="system,tuned,tcmalloc,jemalloc: one run each")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="keep / reuse the exported graphs here")
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args()
    if args.allocators:
        argv = [a for a in sys.argv[1:]]
        i = argv.index("--allocators")
        del argv[i : i + 2]
        if "--out" in argv:
            j = argv.index("--out")
            del argv[j : j + 2]
        results: dict[str, object] = compare_allocators(args.allocators.split(","), argv, args.out)
    else:
        results = measure(args)
        print(f"machine: {results['machine']}")
    if args.out:
        _write_json(results, args.out)


if __name__ == "__main__":
    main()
