"""How far PyTorch eager and onnxruntime are from the FLOP floor of this machine (issue 7).

The floor of a model is its FLOPs (``pem.flops.count_cost`` MACs x 2) divided by the GEMM rate
this machine reaches on one core: a large float32 matmul in torch (reported with 1 and 2
threads) and in numpy (1 BLAS thread, in a subprocess so the thread count takes effect). The
floor uses the best 1-thread rate, since the models run on 1 thread here. Each model is then
timed in PyTorch eager and in onnxruntime FP32 (exported with ``export_artifact``, raw head, to a
temporary directory), interleaved, 1 thread each, and reported as measured time / floor time.
The exported raw graph drops only the deep-supervision *class* heads that eager computes: every
intermediate mask embedding and mask einsum stays (each feeds the next layer's prototype masks),
so onnxruntime is compared to the floor of its own graph (model FLOPs minus the dead class heads). The
1-thread rate is the best of torch, numpy and an onnxruntime MatMul.

Cases: the trained default tiny model at 256x512 and 1024x2048, STDC1 and R50 (seeded random
weights) at 512x1024; R50 eager takes seconds per forward, so the big models use few runs.
Usage: ``python benchmarks/flops_floor.py [--cases tiny@256x512,...] [--no-ort] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import cpu_description, interleaved
from common import ort_session as session

DEFAULT_CASES = "tiny@256x512,tiny@1024x2048,stdc1@512x1024,r50@512x1024"

NUMPY_GEMM = """
import time, numpy as np
n = {n}
a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
a @ b
t = []
for _ in range({runs}):
    s = time.perf_counter(); a @ b; t.append(time.perf_counter() - s)
t.sort(); print(2 * n ** 3 / t[len(t) // 2] / 1e9)
"""


def machine() -> dict[str, object]:
    import onnxruntime as ort

    return {**cpu_description(), "torch": torch.__version__, "onnxruntime": ort.__version__}


def torch_gemm_gflops(n: int, threads: int, runs: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    torch.set_num_threads(1)
    return 2 * n**3 / statistics.median(times) / 1e9


def numpy_gemm_gflops(n: int, runs: int) -> float:
    env = {**os.environ, **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    code = NUMPY_GEMM.format(n=n, runs=runs)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip())


def ort_gemm_gflops(n: int, runs: int) -> float:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = session(model.SerializeToString())
    rng = np.random.default_rng(0)
    feeds = {k: rng.random((n, n), dtype=np.float32) for k in ("a", "b")}
    sess.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def dead_head_macs(config, h: int, w: int) -> int:
    """MACs eager computes but the exported raw graph does not: the class heads of the
    intermediate predictions (the raw outputs are the last layer's). Their mask embeddings and
    mask einsums are not dead: they give the next layer's masks, so the graph computes all of
    them (``h`` and ``w`` are kept for the signature's sake: the class heads do not depend on them)."""
    td = config.transformer_decoder
    return td.num_layers * td.num_queries * td.hidden_dim * (config.num_classes + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default=DEFAULT_CASES, help="comma list of MODEL@HxW (tiny, stdc1, r50)")
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--gemm-runs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10, help="runs for the tiny model")
    parser.add_argument("--big-runs", type=int, default=3, help="runs for stdc1 / r50")
    parser.add_argument("--no-ort", action="store_true", help="time PyTorch eager only")
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args()

    n = args.gemm_size
    gemm = {
        "torch_1_thread": torch_gemm_gflops(n, 1, args.gemm_runs),
        "torch_2_threads": torch_gemm_gflops(n, 2, args.gemm_runs),
        "numpy_1_thread": numpy_gemm_gflops(n, args.gemm_runs),
        "onnxruntime_1_thread": ort_gemm_gflops(n, args.gemm_runs),
    }
    rate = max(v for k, v in gemm.items() if k.endswith("1_thread"))  # GFLOP/s, 1 core
    print(f"GEMM {n}x{n}x{n} float32, GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in gemm.items()))
    torch.set_num_threads(1)
    results: dict[str, object] = {"machine": machine(), "gemm_gflops": gemm, "floor_rate_gflops": rate}
    results["cases"] = {}
    print(
        f"{'case':18s} {'GFLOPs':>8s} {'floor ms':>9s} {'eager ms':>9s} {'x floor':>8s} "
        f"{'ORT ms':>9s} {'x floor':>8s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            results["cases"][case] = _case(case, args, rate, Path(tmp))
    print(f"machine: {results['machine']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    assert all(np.isfinite(r["floor_ms"]) for r in results["cases"].values())


def _case(case: str, args: argparse.Namespace, rate: float, tmp: Path) -> dict[str, object]:
    """One ``MODEL@HxW`` case: its FLOP floor at ``rate`` GFLOP/s, and PyTorch eager (and
    onnxruntime) times against it; prints its table row."""
    from export.pipeline import ExportOptions, export_artifact
    from export.source import load_source
    from pem.flops import count_cost
    from pem.zoo import ensure_default_checkpoint

    name, size = case.split("@")
    h, w = (int(v) for v in size.split("x"))
    if name == "tiny":
        source = load_source(checkpoint=ensure_default_checkpoint(), height=h, width=w)
    else:
        source = load_source(preset=f"cityscapes-semantic-{name}", height=h, width=w)
    cost = count_cost(source.config, (h, w))
    gflops = 2 * cost.macs / 1e9
    floor_ms = gflops / rate * 1e3
    # The exported graph has no intermediate class heads: its own (slightly lower) floor.
    ort_gflops = gflops - 2 * dead_head_macs(source.config, h, w) / 1e9
    ort_floor_ms = ort_gflops / rate * 1e3
    model = source.model.eval()
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))

    def eager(model=model, x=x):
        with torch.inference_mode():
            return model(x)

    fns = {"eager": eager}
    if not args.no_ort:
        opts = ExportOptions(out_dir=tmp / case.replace("@", "_"), name=name, head="raw")
        sess = session(export_artifact(source, opts).onnx_path)
        feeds = {"images": x.numpy()}
        fns["ort"] = lambda sess=sess, feeds=feeds: sess.run(None, feeds)
    runs = args.runs if name == "tiny" else args.big_runs
    med = interleaved(fns, runs, 1)
    row = {
        "gflops": round(gflops, 3),
        "gmacs": round(cost.macs / 1e9, 3),
        "floor_ms": round(floor_ms, 3),
        "eager_ms": round(med["eager"], 2),
        "eager_over_floor": round(med["eager"] / floor_ms, 2),
        "runs": runs,
    }
    ort_text = f"{'-':>9s} {'-':>8s}"
    if "ort" in med:
        row["ort_ms"] = round(med["ort"], 2)
        row["ort_graph_gflops"] = round(ort_gflops, 3)
        row["ort_floor_ms"] = round(ort_floor_ms, 3)
        row["ort_over_floor"] = round(med["ort"] / ort_floor_ms, 2)
        ort_text = f"{med['ort']:9.1f} {med['ort'] / ort_floor_ms:8.1f}"
        print(
            f"{case:18s} {gflops:8.2f} {floor_ms:9.1f} {med['eager']:9.1f} "
            f"{med['eager'] / floor_ms:8.1f} {ort_text}",
            flush=True,
        )
    fns.clear()
    return row


if __name__ == "__main__":
    main()
