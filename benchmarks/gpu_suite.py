"""One-command GPU suite (issue 13): PyTorch + torchvision on one CUDA GPU, no TensorRT needed.

Sections (each one records its numbers or the reason it was skipped):

1. ``deform_conv``: our deformable convolution (:func:`pem.ops.deform_conv2d_native`, the pure
   PyTorch one the exporter decomposes) vs torchvision's ``deform_conv2d`` kernel on the device:
   forward and backward (input, offset, mask, weight, bias) max abs / rel error.
2. ``model_fps``: PyTorch FP16 FPS of the R50 / STDC1 / STDC2 presets (seeded random weights) at
   1024x2048, batch 1 and 8: CUDA events, warm-up, median.
3. ``decoder_fps``: the PEM transformer decoder vs the Mask2Former-style decoders
   (:class:`pem.baselines.Mask2FormerDecoder` with ``mha`` and ``sdpa`` attention) on the same
   features, FP16: FPS and PEM / Mask2Former time ratios, in eager, with ``torch.compile`` and
   with a captured CUDA graph (paper: whole model 13.8 vs 4.1 FPS).
4. ``headline``: whole model against whole model (issue 24): PEM R50 vs the faithful Mask2Former R50
   (:mod:`pem.mask2former`), Cityscapes panoptic, FP16 at 1024x2048 batch 1 in PyTorch with CUDA
   events, FPS beside the paper's 13.8 / 4.1; plus onnxruntime's CUDA provider (FP32 graph, input
   and outputs bound on the device with I/O binding) where it is installed. ``--cpu-smoke`` runs the
   onnxruntime rows with the CPU provider so the code path is checked.

``--cpu-smoke`` runs the same code paths on the CPU at tiny sizes in float32 (a few seconds);
what needs CUDA (CUDA graphs) or is too slow there (``torch.compile``) is skipped with the reason
in the output. Results: ``gpu_suite.json`` and ``gpu_suite.md`` in ``--out-dir``.

Usage: ``python benchmarks/gpu_suite.py [--out-dir results/] [--cpu-smoke]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pem, not an installed one

PRESETS = ("r50", "stdc1", "stdc2")


@dataclass(frozen=True)
class Sizes:
    """Sizes of one suite run (full on a GPU, tiny for ``--cpu-smoke``)."""

    image: tuple[int, int]
    batches: tuple[int, ...]
    deform: tuple[int, int, int, int]  # B, C, H, W of the deformable conv check
    warmup: int
    runs: int
    dtype: torch.dtype


FULL = Sizes((1024, 2048), (1, 8), (2, 128, 128, 256), 5, 20, torch.float16)
SMOKE = Sizes((64, 64), (1, 2), (1, 4, 8, 8), 0, 1, torch.float32)


def _timer(device: torch.device) -> Callable[[Callable[[], object], int, int], float]:
    """Median ms of a callable: CUDA events on a GPU, perf_counter on the CPU."""
    from export.baseline_bench import wall_times_ms

    def cuda_time(fn: Callable[[], object], warmup: int, runs: int) -> float:
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize(device)
        times = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def cpu_time(fn: Callable[[], object], warmup: int, runs: int) -> float:
        return statistics.median(wall_times_ms(fn, warmup, runs))

    return cuda_time if device.type == "cuda" else cpu_time


def _errors(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    diff = (ours.float() - ref.float()).abs()
    return {
        "max_abs": float(diff.max()),
        "max_rel": float(diff.max() / ref.float().abs().max().clamp_min(1e-12)),
    }


def deform_conv_section(device: torch.device, sizes: Sizes) -> dict[str, object]:
    """Our deformable conv vs torchvision's kernel on ``device``: forward and backward errors."""
    try:
        from torchvision.ops import deform_conv2d as tv_deform_conv2d
    except ImportError as exc:
        return {"skipped": f"torchvision not importable ({exc.__class__.__name__}: {exc})"}
    from pem.ops.deform_conv import deform_conv2d_native

    b, c, h, w = sizes.deform
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "input": torch.randn(b, c, h, w, generator=gen),
        "offset": torch.randn(b, 18, h, w, generator=gen) * 2.0,
        "mask": torch.rand(b, 9, h, w, generator=gen),
        "weight": torch.randn(c, c, 3, 3, generator=gen) / (3 * c**0.5),
        "bias": torch.randn(c, generator=gen),
    }
    tensors = {k: v.to(device).requires_grad_() for k, v in tensors.items()}
    grad_out = torch.randn(b, c, h, w, generator=gen).to(device)

    def run(fn: Callable[..., torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = fn()
        grads = torch.autograd.grad(out, list(tensors.values()), grad_out)
        return out.detach(), dict(zip(tensors, grads))

    t = tensors
    ours, ours_g = run(
        lambda: deform_conv2d_native(t["input"], t["offset"], t["mask"], t["weight"], t["bias"], 1, 1, 1)
    )
    ref, ref_g = run(
        lambda: tv_deform_conv2d(
            t["input"], t["offset"], t["weight"], t["bias"], padding=(1, 1), mask=t["mask"]
        )
    )
    return {
        "shape": [b, c, h, w],
        "device": str(device),
        "forward": _errors(ours, ref),
        "backward": {k: _errors(ours_g[k], ref_g[k]) for k in tensors},
    }


def model_fps_section(device: torch.device, sizes: Sizes) -> dict[str, object]:
    """FPS of the paper presets (random weights) at ``sizes.image``, each batch size."""
    from pem.config import get_preset
    from pem.model import PEM

    timer = _timer(device)
    h, w = sizes.image
    rows: dict[str, object] = {}
    for name in PRESETS:
        torch.manual_seed(0)
        model = PEM(get_preset(f"cityscapes-semantic-{name}")).eval().to(device, sizes.dtype)
        for batch in sizes.batches:
            x = torch.randn(batch, 3, h, w, device=device, dtype=sizes.dtype)
            with torch.inference_mode():
                ms = timer(lambda model=model, x=x: model(x), sizes.warmup, sizes.runs)
            rows[f"{name} b{batch}"] = {"ms": round(ms, 3), "fps": round(1e3 * batch / ms, 2)}
        del model
    return {"input": [h, w], "dtype": str(sizes.dtype).replace("torch.", ""), "rows": rows}


def _decoder_inputs(device: torch.device, sizes: Sizes, in_ch: int, mask_dim: int) -> tuple:
    h, w = sizes.image
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, in_ch, h // s, w // s, generator=gen) for s in (32, 16, 8)]
    mask_features = torch.randn(1, mask_dim, h // 4, w // 4, generator=gen)
    return tuple(t.to(device, sizes.dtype) for t in (*feats, mask_features))


def _cuda_graph(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """Capture ``fn`` (static inputs) into a CUDA graph; return its replay."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def decoder_fps_section(device: torch.device, sizes: Sizes, modes: Sequence[str]) -> dict[str, object]:
    """PEM decoder vs Mask2Former-style decoders (MHA, SDPA): ms, FPS and ratios per mode."""
    from pem.baselines import Mask2FormerDecoder
    from pem.config import TransformerDecoderConfig
    from pem.transformer_decoder import TransformerDecoder

    timer = _timer(device)
    cfg = TransformerDecoderConfig()
    in_ch, mask_dim = 128, 256
    torch.manual_seed(0)
    decoders = {
        "pem": TransformerDecoder(in_ch, mask_dim, 19, cfg),
        "mask2former_mha": Mask2FormerDecoder(in_ch, mask_dim, 19, cfg, attention="mha"),
        "mask2former_sdpa": Mask2FormerDecoder(in_ch, mask_dim, 19, cfg, attention="sdpa"),
    }
    decoders = {k: d.eval().to(device, sizes.dtype) for k, d in decoders.items()}
    inputs = _decoder_inputs(device, sizes, in_ch, mask_dim)
    results: dict[str, object] = {"input": list(sizes.image), "dtype": str(sizes.dtype).replace("torch.", "")}
    for mode in ("eager", "compile", "cuda_graph"):
        if mode not in modes:
            results[mode] = {"skipped": "not requested (--modes)"}
            continue
        if mode == "cuda_graph" and device.type != "cuda":
            results[mode] = {"skipped": "CUDA graphs need a CUDA device"}
            continue
        if mode == "compile" and device.type != "cuda":
            results[mode] = {"skipped": "torch.compile is not timed on the CPU (minutes of C++ compilation)"}
            continue
        row: dict[str, object] = {}
        with torch.inference_mode():
            for name, dec in decoders.items():

                def call(dec=dec):
                    out = dec(list(inputs[:3]), inputs[3])
                    return out["pred_logits"], out["pred_masks"]

                fn: Callable[[], object] = call
                if mode == "compile":
                    compiled = torch.compile(dec)
                    fn = lambda compiled=compiled: compiled(list(inputs[:3]), inputs[3])  # noqa: E731
                elif mode == "cuda_graph":
                    fn = _cuda_graph(call, device)
                ms = timer(fn, sizes.warmup, sizes.runs)
                row[name] = {"ms": round(ms, 3), "fps": round(1e3 / ms, 2)}
        for base in ("mask2former_mha", "mask2former_sdpa"):
            row[f"pem_over_{base}"] = round(row["pem"]["ms"] / row[base]["ms"], 4)
        results[mode] = row
    return results


HEADLINE_PRESET = "cityscapes-panoptic-r50"
PAPER_FPS = {"pem": 13.8, "mask2former": 4.1}  # V100, Cityscapes panoptic, 1024x2048


def _headline_models(h: int, w: int) -> dict[str, torch.nn.Module]:
    from pem.config import get_preset
    from pem.mask2former import build_mask2former
    from pem.model import PEM

    cfg = get_preset(HEADLINE_PRESET).replace(input_size=(h, w))
    models = {}
    for name, build in (("pem", PEM), ("mask2former", build_mask2former)):
        torch.manual_seed(0)
        models[name] = build(cfg).eval()
    return models


def _ort_rows(
    models: dict[str, torch.nn.Module], device: torch.device, sizes: Sizes, out_dir: Path
) -> dict[str, object]:
    """onnxruntime FP32 rows: CUDA provider with I/O binding on a GPU, the CPU provider in the smoke run."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed"}
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        return {"skipped": f"{provider} is not available (install onnxruntime-gpu)"}
    import numpy as np
    import onnx

    from export.baseline_bench import raw_onnx

    h, w = sizes.image
    timer = _timer(torch.device("cpu"))  # session.run blocks until the outputs are ready
    rows: dict[str, object] = {"provider": provider, "onnxruntime": ort.__version__}
    for name, model in models.items():
        cpu_model = model.to("cpu", torch.float32)
        x = torch.randn(1, 3, h, w)
        proto = raw_onnx(cpu_model, x)
        path = out_dir / f"headline_{name}.onnx"
        onnx.save(proto, str(path))
        session = ort.InferenceSession(str(path), providers=[provider])
        binding = session.io_binding()
        if device.type == "cuda":
            x_dev = x.to(device).contiguous()
            binding.bind_input(
                "images", "cuda", device.index or 0, np.float32, list(x.shape), x_dev.data_ptr()
            )
            for output in ("pred_logits", "pred_masks"):
                binding.bind_output(output, "cuda", device.index or 0)
        else:
            binding.bind_cpu_input("images", x.numpy())
            for output in ("pred_logits", "pred_masks"):
                binding.bind_output(output)
        ms = timer(lambda s=session, b=binding: s.run_with_iobinding(b), sizes.warmup, sizes.runs)
        rows[name] = {"ms": round(ms, 3), "fps": round(1e3 / ms, 2), "paper_fps": PAPER_FPS[name]}
        path.unlink()
        del session, binding
    rows["pem_over_mask2former_time"] = round(rows["pem"]["ms"] / rows["mask2former"]["ms"], 3)
    return rows


def headline_section(device: torch.device, sizes: Sizes, out_dir: Path) -> dict[str, object]:
    """PEM R50 vs Mask2Former R50, whole model, batch 1: PyTorch (``sizes.dtype``) and onnxruntime."""
    timer = _timer(device)
    h, w = sizes.image
    models = _headline_models(h, w)
    torch_rows: dict[str, object] = {}
    for name, model in models.items():
        model.to(device, sizes.dtype)
        x = torch.randn(1, 3, h, w, device=device, dtype=sizes.dtype)
        with torch.inference_mode():
            ms = timer(lambda model=model, x=x: model(x), sizes.warmup, sizes.runs)
        torch_rows[name] = {"ms": round(ms, 3), "fps": round(1e3 / ms, 2), "paper_fps": PAPER_FPS[name]}
    ratio = torch_rows["pem"]["ms"] / torch_rows["mask2former"]["ms"]
    torch_rows["pem_over_mask2former_time"] = round(ratio, 3)
    torch_rows["paper_ratio"] = round(PAPER_FPS["mask2former"] / PAPER_FPS["pem"], 3)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "preset": HEADLINE_PRESET,
        "input": [h, w],
        "torch": {"dtype": str(sizes.dtype).replace("torch.", ""), **torch_rows},
        "onnxruntime": _ort_rows(models, device, sizes, out_dir),
    }


def _markdown(results: dict[str, object]) -> str:
    lines = [f"# GPU suite ({results['mode']})", "", f"device: {results['device']}", ""]
    for section, value in results["sections"].items():
        lines.append(f"## {section}")
        lines.append("")
        lines.append("```json")
        lines.append(json.dumps(value, indent=2))
        lines.append("```")
        lines.append("")
    return "\n".join(lines)


def run_suite(
    out_dir: Path, cpu_smoke: bool = False, modes: Sequence[str] = ("eager", "compile", "cuda_graph")
):
    """Run every section and write ``gpu_suite.json`` / ``gpu_suite.md`` to ``out_dir``.

    Without ``cpu_smoke`` a CUDA device is required (``RuntimeError`` otherwise).
    """
    if cpu_smoke:
        device, sizes = torch.device("cpu"), SMOKE
    else:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "gpu_suite: no CUDA device (use --cpu-smoke to check the code paths on the CPU)"
            )
        device, sizes = torch.device("cuda"), FULL
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    results: dict[str, object] = {
        "mode": "cpu-smoke" if cpu_smoke else "gpu",
        "device": name,
        "torch": torch.__version__,
        "sections": {},
    }
    sections: dict[str, Callable[[], dict[str, object]]] = {
        "deform_conv": lambda: deform_conv_section(device, sizes),
        "model_fps": lambda: model_fps_section(device, sizes),
        "decoder_fps": lambda: decoder_fps_section(device, sizes, modes),
        "headline": lambda: headline_section(device, sizes, out_dir),
    }
    for key, section in sections.items():
        start = time.perf_counter()
        value = section()
        value["seconds"] = round(time.perf_counter() - start, 2)
        results["sections"][key] = value
        print(f"{key}: {json.dumps(value)}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename, text in (
        ("gpu_suite.json", json.dumps(results, indent=2) + "\n"),
        ("gpu_suite.md", _markdown(results)),
    ):
        tmp = out_dir / (filename + ".tmp")
        tmp.write_text(text)
        tmp.replace(out_dir / filename)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=Path("gpu_suite_results"))
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (code-path check)")
    parser.add_argument("--modes", default="eager,compile,cuda_graph", help="decoder timing modes")
    args = parser.parse_args(argv)
    run_suite(args.out_dir, args.cpu_smoke, tuple(args.modes.split(",")))


if __name__ == "__main__":
    main()
