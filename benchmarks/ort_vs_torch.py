"""onnxruntime FP32 vs PyTorch eager, same model, same input, side by side (issue 7).

Goal: onnxruntime <= 0.7x the time of PyTorch eager at 512x1024. Models: the trained default
(``pem.zoo.ensure_default_checkpoint()``, cityscapes-panoptic-tiny) and the
``cityscapes-semantic-stdc1`` preset with seeded random weights (default ``--models tiny,stdc1``).
Each is exported with ``export_artifact`` (raw head: ``images`` -> ``pred_logits``,
``pred_masks``, FP32) into a temporary directory; both sides take the same normalised float
image, batch 1, 1 thread (``torch.set_num_threads(1)``, ORT ``intra_op_num_threads=1``),
runs interleaved, medians.
Usage: ``python benchmarks/ort_vs_torch.py [--models tiny,stdc1] [--runs 20] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import cpu_description, interleaved
from common import ort_session as session


def machine() -> dict[str, object]:
    import onnxruntime as ort

    return {
        **cpu_description(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "threads": 1,
    }


def load(name: str, height: int, width: int):
    from export.source import load_source
    from pem.zoo import ensure_default_checkpoint

    if name == "tiny":
        return load_source(checkpoint=ensure_default_checkpoint(), height=height, width=width)
    return load_source(preset=f"cityscapes-semantic-{name}", height=height, width=width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="tiny,stdc1", help="comma list of tiny, stdc1, stdc2, r50")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=20, help="runs for tiny (others: --big-runs)")
    parser.add_argument("--big-runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args()

    from export.pipeline import ExportOptions, export_artifact

    torch.set_num_threads(1)
    results: dict[str, object] = {"machine": machine(), "input": [args.height, args.width], "models": {}}
    print(f"{'model':8s} {'eager ms':>10s} {'ORT ms':>10s} {'ORT/eager':>9s} {'maxdiff':>9s} {'export':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            source = load(name, args.height, args.width)
            start = time.perf_counter()
            opts = ExportOptions(out_dir=Path(tmp) / name, name=name, head="raw")
            artifact = export_artifact(source, opts).onnx_path
            export_s = time.perf_counter() - start
            sess = session(artifact)
            model = source.model.eval()
            x = torch.randn(1, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
            x_np = x.numpy()
            feeds = {"images": x_np}

            def eager(model=model, x=x):
                with torch.inference_mode():
                    return model(x)

            def ort_run(sess=sess, feeds=feeds):
                return sess.run(["pred_logits", "pred_masks"], feeds)

            ref, got = eager(), ort_run()
            diff = float(np.abs(ref["pred_masks"].numpy() - got[1]).max())
            runs = args.runs if name == "tiny" else args.big_runs
            med = interleaved({"eager": eager, "ort": ort_run}, runs, args.warmup)
            ratio = med["ort"] / med["eager"]
            results["models"][name] = {
                "source": {k: v for k, v in source.description.items() if k != "config"},
                "eager_ms": round(med["eager"], 2),
                "ort_ms": round(med["ort"], 2),
                "ort_over_eager": round(ratio, 4),
                "max_abs_diff_pred_masks": diff,
                "export_s": round(export_s, 1),
                "runs": runs,
            }
            print(
                f"{name:8s} {med['eager']:10.2f} {med['ort']:10.2f} {ratio:9.3f} {diff:9.1e} {export_s:7.1f}",
                flush=True,
            )
            del sess
    print(f"machine: {results['machine']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
