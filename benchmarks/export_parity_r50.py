"""Acceptance benchmark of issue 4: Cityscapes R50 at 1024x2048, ONNX export and parity.

Exports the ``cityscapes-semantic-r50`` preset (seeded random weights; pass ``--checkpoint`` for a
trained model) as

1. ``raw`` FP32, native DeformConv: max abs logit error and label agreement vs PyTorch;
2. ``semantic`` FP32: the in-graph label map vs PyTorch;
3. ``semantic`` FP16: label agreement of the graph as shipped (onnxruntime CPU) and of the
   FP16-emulated graph (per-op FP16 rounding), overall and on pixels whose PyTorch class-score
   margin (best - second best) is above 1e-3 / 1e-2 (random weights make many near-ties);
4. ``raw`` FP32, decomposed deformable conv: difference to the native graph;
5. an FP16 ablation: how often PEM-CA picks a different prototype (per decoder layer) in the
   FP16-emulated graph than in FP32, with the full FP32 block set, without the "prototype
   similarity" rule, and with op types only;

and prints graph op counts and export times. Results go to ``OUT/results.json``.

    python benchmarks/export_parity_r50.py --out /tmp/r50 [--height 1024 --width 2048]

Takes ~15-30 minutes on 2 CPU cores (each 1024x2048 R50 forward is tens of seconds).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract.sidecar import Sidecar
from export.fp16 import convert_to_fp16, emulate_fp16
from export.heads import ExportedModel, build_postprocess
from export.parity import make_samples, open_session
from export.pipeline import ExportOptions, export_artifact
from export.simplify import finalize, forbidden_ops
from export.source import load_source
from runtime.tools.compare import HeadSpec, interpret, mean_iou
from runtime.tools.compare.engine import output_diff


def _raw_view(outputs: dict[str, np.ndarray], num_classes: int):
    """The engine's reading of a raw head's batch-1 outputs (labels and class scores)."""
    h, w = (4 * s for s in outputs["pred_masks"].shape[-2:])
    spec = HeadSpec("raw", num_classes, h, w)
    return interpret(spec, {k: v[0] for k, v in outputs.items()})


def labels_from_outputs(head: str, outputs: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
    """(1, H, W) labels of a raw head's outputs, as the comparison engine reads them."""
    assert head == "raw"
    return _raw_view(outputs, num_classes).labels[None]


def semantic_margin(pred_logits: np.ndarray, pred_masks: np.ndarray) -> np.ndarray:
    """(1, H, W) top-1 minus top-2 class score (near ties flip under any rounding)."""
    num_classes = pred_logits.shape[-1] - 1
    scores = _raw_view({"pred_logits": pred_logits, "pred_masks": pred_masks}, num_classes).scores
    top2 = np.partition(scores, -2, axis=-1)[..., -2:]
    return (top2[..., 1] - top2[..., 0])[None]


def tensor_diff(name: str, got: np.ndarray, ref: np.ndarray):
    """The engine's per-output difference."""
    return output_diff(name, "informational", got, ref)


def _expose_argmax(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Copy of ``model`` with every ArgMax output (the prototype indices) as an extra graph output."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = [n.output[0] for n in out.graph.node if n.op_type == "ArgMax"]
    for name in names:
        out.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    return out, names


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="cityscapes-semantic-r50")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--random", type=int, default=1, help="random-noise inputs")
    parser.add_argument("--scenes", type=int, default=1, help="synthetic street-scene inputs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    source = load_source(preset=args.preset, checkpoint=args.checkpoint, height=args.height, width=args.width)
    results: dict[str, object] = {"preset": args.preset, "size": [args.height, args.width], "graphs": {}}
    graphs = {
        tag: _export(source, out, results, tag, **kwargs)
        for tag, kwargs in (
            ("raw_fp32_native", {"head": "raw"}),
            ("semantic_fp32", {"head": "semantic"}),
            ("semantic_fp16", {"head": "semantic", "precision": "fp16"}),
            ("raw_fp16_native", {"head": "raw", "precision": "fp16"}),
            ("raw_fp32_decomposed", {"head": "raw", "deform_impl": "decomposed"}),
        )
    }
    spec = Sidecar.from_file(out / "raw_fp32_native" / "model.json").input.to_dict()
    samples = [(item.name, x) for item, x in make_samples(spec, random=args.random, scenes=args.scenes)]
    run = _Run(samples, source.config.num_classes)
    run.torch_references(source)
    run.raw_graphs(graphs["raw_fp32_native"], graphs["raw_fp16_native"], graphs["raw_fp32_decomposed"])
    run.prototype_ablation(onnx.load(str(graphs["raw_fp32_native"])))
    run.semantic_graphs(graphs["semantic_fp32"], graphs["semantic_fp16"])
    per_sample = run.per_sample
    for row in per_sample:
        _log(json.dumps(row, default=float))
    results["samples"] = per_sample
    results["forbidden_ops"] = {
        tag: forbidden_ops(onnx.load(str(graphs[tag]), load_external_data=False))
        for tag in ("raw_fp32_native", "semantic_fp16")
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    _log(f"wrote {out / 'results.json'}")
    for key, value in _worst(per_sample).items():
        print(f"{key:<45} {value:.6g}")
    return 0


def _export(source: object, out: Path, results: dict[str, object], tag: str, **kwargs: object) -> Path:
    """Export graph ``tag`` into ``out/tag`` and record its size, ops and lint in ``results``."""
    _log(f"export {tag}")
    start = time.perf_counter()
    result = export_artifact(source, ExportOptions(out_dir=out / tag, **kwargs))  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    counts = result.op_counts
    results["graphs"][tag] = {  # type: ignore[index]
        "export_seconds": round(seconds, 1),
        "step_seconds": {k: round(v, 1) for k, v in result.timings.items()},
        "size_mb": round((result.spec.provenance.size_bytes or 0) / 1e6, 1),
        "nodes": sum(counts.values()),
        "op_counts": counts,
        "deform_conv": counts.get("DeformConv", 0),
        "forbidden": {op: counts.get(op, 0) for op in ("NonZero", "ScatterND", "Loop", "If")},
        "tensorrt_lint": result.lint.summary(),
        "fp16": result.fp16.to_dict() if result.fp16 else None,
    }
    _log(f"  {seconds:.1f} s, {sum(counts.values())} nodes, {result.lint.summary()}")
    return result.onnx_path


class _Run:
    """The samples, PyTorch's reference outputs and one row of measurements per sample."""

    def __init__(self, samples: list[tuple[str, np.ndarray]], num_classes: int):
        self.samples = samples
        self.num_classes = num_classes
        self.refs: list[dict[str, np.ndarray]] = []
        self.per_sample: list[dict[str, object]] = []

    def torch_references(self, source: object) -> None:
        """PyTorch once per sample (raw outputs, semantic labels, their margins)."""
        reference = ExportedModel(source.model, "raw").eval()  # type: ignore[attr-defined]
        semantic_post = build_postprocess("semantic", source.config)  # type: ignore[attr-defined]
        assert semantic_post is not None
        for label, x in self.samples:
            _log(f"{label}: PyTorch")
            start = time.perf_counter()
            with torch.no_grad():
                logits, masks = reference(torch.from_numpy(x))
                labels = semantic_post(logits, masks).numpy()
            row: dict[str, object] = {"sample": label, "torch_seconds": round(time.perf_counter() - start, 1)}
            ref = {"pred_logits": logits.numpy(), "pred_masks": masks.numpy(), "labels": labels}
            ref["margin"] = semantic_margin(ref["pred_logits"], ref["pred_masks"])
            row["margin_quantiles"] = {q: float(np.quantile(ref["margin"], q)) for q in (0.01, 0.1, 0.5)}
            self.refs.append(ref)
            self.per_sample.append(row)

    def run_all(self, name: str, model: Path | onnx.ModelProto, names: list[str] | None = None) -> list[list]:
        """``model`` on every sample. One onnxruntime session at a time: a 1024x2048 session keeps
        gigabytes in its memory arena, several at once do not fit in 24 GiB."""
        session = open_session(model)
        outputs = []
        for (label, x), row in zip(self.samples, self.per_sample):
            _log(f"{label}: onnxruntime {name}")
            start = time.perf_counter()
            outputs.append(session.run(names, {"images": x}))
            row[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
        del session
        gc.collect()
        return outputs

    def raw_dicts(self, name: str, model: Path | onnx.ModelProto) -> list[dict[str, np.ndarray]]:
        return [{"pred_logits": o[0], "pred_masks": o[1]} for o in self.run_all(name, model)]

    def labels(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return labels_from_outputs("raw", outputs, num_classes=self.num_classes)

    def raw_graphs(self, raw_native: Path, raw_fp16: Path, raw_decomposed: Path) -> None:
        """The raw graphs (FP32, FP16 and FP16 emulated, decomposed DeformConv) against PyTorch."""
        native = self.raw_dicts("raw_native", raw_native)
        for row, ref, got in zip(self.per_sample, self.refs, native):
            for name in ("pred_logits", "pred_masks"):
                row[f"fp32_{name}"] = vars(tensor_diff(name, got[name], ref[name]))
            got_labels = self.labels(got)
            row["fp32_raw_label_agreement"] = float((got_labels == ref["labels"]).mean())
            row["fp32_raw_miou"] = mean_iou(got_labels, ref["labels"])
        for name, model in (
            ("raw_fp16", raw_fp16),
            ("raw_fp16_emulated", emulate_fp16(onnx.load(str(raw_fp16)))),
        ):
            for row, ref, got in zip(self.per_sample, self.refs, self.raw_dicts(name, model)):
                for output in ("pred_logits", "pred_masks"):
                    row[f"{name}_{output}"] = vars(tensor_diff(output, got[output], ref[output]))
                row[f"{name}_label_agreement"] = float((self.labels(got) == ref["labels"]).mean())
        decomposed = self.raw_dicts("raw_decomposed", raw_decomposed)
        for row, ref, nat, dec in zip(self.per_sample, self.refs, native, decomposed):
            for name in ("pred_logits", "pred_masks"):
                row[f"decomposed_vs_native_{name}"] = vars(tensor_diff(name, dec[name], nat[name]))
                row[f"decomposed_vs_torch_{name}"] = vars(tensor_diff(name, dec[name], ref[name]))
            row["decomposed_vs_native_label_agreement"] = float((self.labels(dec) == self.labels(nat)).mean())

    def prototype_ablation(self, fp32_raw: onnx.ModelProto) -> None:
        """FP16 ablation: prototype indices (every ArgMax of PEM-CA) of FP16-emulated graphs vs FP32."""
        probe32, argmax_names = _expose_argmax(fp32_raw)
        indices = {"fp32": self.run_all("prototypes fp32", probe32, argmax_names)}
        ablations = {
            "all rules": None,
            "without prototype-similarity rule": ("op type", "L2-normalize"),
            "op types only": ("op type",),
        }
        for tag, rules in ablations.items():
            converted = convert_to_fp16(fp32_raw, rules)[0] if rules else convert_to_fp16(fp32_raw)[0]
            probe = _expose_argmax(finalize(emulate_fp16(finalize(converted))))[0]
            indices[tag] = self.run_all(f"prototypes {tag}", probe, argmax_names)
        for i, row in enumerate(self.per_sample):
            row["prototype_agreement_fp16_emulated"] = {
                tag: [round(float((a == b).mean()), 5) for a, b in zip(indices[tag][i], indices["fp32"][i])]
                for tag in ablations
            }

    def semantic_graphs(self, sem_fp32: Path, sem_fp16: Path) -> None:
        """The semantic graphs' labels against PyTorch's, overall and on confident pixels."""
        for name, model in (
            ("sem_fp32", sem_fp32),
            ("sem_fp16", sem_fp16),
            ("sem_fp16_emulated", emulate_fp16(onnx.load(str(sem_fp16)))),
        ):
            for row, ref, got in zip(self.per_sample, self.refs, self.run_all(name, model)):
                agree = got[0] == ref["labels"]
                row[f"{name}_label_agreement"] = float(agree.mean())
                row[f"{name}_miou"] = mean_iou(got[0], ref["labels"])
                for threshold in (1e-3, 1e-2):
                    confident = ref["margin"] > threshold
                    row[f"{name}_agreement_margin>{threshold:g}"] = float(agree[confident].mean())
                    row[f"fraction_margin>{threshold:g}"] = float(confident.mean())


def _worst(per_sample: list[dict[str, Any]]) -> dict[str, float]:
    """The headline numbers: each measurement at its worst sample."""
    return {
        "fp32 max abs pred_logits": max(r["fp32_pred_logits"]["max_abs"] for r in per_sample),
        "fp32 label agreement (raw graph)": min(r["fp32_raw_label_agreement"] for r in per_sample),
        "fp32 label agreement (semantic graph)": min(r["sem_fp32_label_agreement"] for r in per_sample),
        "fp16 label agreement (onnxruntime)": min(r["sem_fp16_label_agreement"] for r in per_sample),
        "fp16 label agreement (emulated)": min(r["sem_fp16_emulated_label_agreement"] for r in per_sample),
        "fp16 max rel pred_logits (onnxruntime)": max(
            r["raw_fp16_pred_logits"]["relative_error"] for r in per_sample
        ),
        "fp16 max rel pred_logits (emulated)": max(
            r["raw_fp16_emulated_pred_logits"]["relative_error"] for r in per_sample
        ),
        "decomposed vs native max abs pred_logits": max(
            r["decomposed_vs_native_pred_logits"]["max_abs"] for r in per_sample
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
