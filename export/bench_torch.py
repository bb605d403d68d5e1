"""PyTorch (eager) latency of a checkpoint or preset, in :class:`runtime.tools.bench.BenchResult`.

On CUDA the forward pass is timed with ``torch.cuda.Event`` pairs and the memory is
``torch.cuda.max_memory_allocated``; on the CPU with ``time.perf_counter`` and the process's
peak RSS. Stages: ``pre`` (uint8 BGR frames -> normalised NCHW tensor on the device), ``infer``
(``model(...)``), ``post`` (semantic map: class x mask product, upsampling, argmax, copy to host).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from export.errors import ExportError
from export.source import load_source
from pem.inference import semantic_inference
from runtime.tools.bench import (
    BenchResult,
    _check_counts,
    bench_image,
    encode_result,
    peak_rss_mb,
    reset_peak_rss,
    runtime_versions,
    summarize,
)


def bench_torch(
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    preset: str | None = None,
    device: str = "cpu",
    shape: tuple[int, int] | None = None,
    batch: int = 1,
    warmup: int = 3,
    iterations: int = 20,
    threads: int | None = 1,
    name: str | None = None,
) -> BenchResult:
    """Time the PyTorch model of ``checkpoint`` (ours, ``.safetensors``) or ``preset`` (random weights).

    ``shape`` (H, W), multiples of 32, default the model's input size. ``threads`` sets torch's
    intra-op threads for the run (restored afterwards).

    Raises:
        ExportError: one line naming the bad argument or file.
    """
    from runtime.tools.bench import BenchError

    try:
        _check_counts(batch, warmup, iterations)
    except BenchError as exc:
        raise ExportError(str(exc)) from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExportError(f"--device {device}: CUDA is not available here")
    height, width = shape if shape is not None else (None, None)
    source = load_source(preset=preset, checkpoint=checkpoint, height=height, width=width, batch=batch)
    h, w = source.config.input_size
    dev = torch.device(device)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        reset_peak_rss()
        model = source.model.to(dev).eval()
        frames = np.stack([bench_image(h, w, seed=i) for i in range(batch)])
        cuda = dev.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        latencies: list[float] = []
        stages: dict[str, list[float]] = {"pre": [], "infer": [], "post": [], "encode": []}
        with torch.inference_mode():
            for i in range(warmup + iterations):
                times, labels = _cuda_step(model, frames, dev) if cuda else _cpu_step(model, frames, dev)
                start = time.perf_counter()
                for label_map in labels:
                    encode_result(SimpleNamespace(labels=label_map, panoptic=None))
                encode_ms = (time.perf_counter() - start) * 1e3
                if i >= warmup:
                    latencies.append(sum(times) + encode_ms)
                    for key, value in zip(("pre", "infer", "post", "encode"), (*times, encode_ms)):
                        stages[key].append(value / batch)
        # PyTorch's forward pass is the compute; on the CPU nothing is copied, on CUDA the upload
        # happens in pre and the download at the end of post.
        stages["compute"] = stages["infer"]
        if not cuda:
            stages["h2d"] = stages["d2h"] = [0.0] * len(stages["infer"])
        memory = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else peak_rss_mb()
    finally:
        torch.set_num_threads(before)
    label = name or (Path(checkpoint).name if checkpoint is not None else str(preset))
    return summarize(
        latencies,
        name=label,
        backend="pytorch",
        precision="fp32",
        device=str(dev),
        shape=(h, w),
        batch=batch,
        warmup=warmup,
        stages_ms=stages,
        peak_memory_mb=memory,
        memory_kind="cuda" if cuda else "rss",
        path=str(checkpoint or ""),
        copies="inside pre/post" if cuda else "none",
        versions={"torch": torch.__version__, **runtime_versions()},
    )


def _pre(model: torch.nn.Module, frames: np.ndarray, dev: torch.device) -> torch.Tensor:
    x = torch.from_numpy(frames[..., ::-1].copy()).to(dev).permute(0, 3, 1, 2).float()  # BGR -> RGB NCHW
    return model.normalize(x)  # type: ignore[operator]


def _post(model: torch.nn.Module, out: dict, h: int, w: int) -> np.ndarray:
    scores = semantic_inference(out["pred_logits"], out["pred_masks"], (h, w))
    return scores.argmax(1).to(torch.int32).cpu().numpy()


def _cpu_step(
    model: torch.nn.Module, frames: np.ndarray, dev: torch.device
) -> tuple[tuple[float, float, float], np.ndarray]:
    t0 = time.perf_counter()
    x = _pre(model, frames, dev)
    t1 = time.perf_counter()
    out = model(x)
    t2 = time.perf_counter()
    labels = _post(model, out, frames.shape[1], frames.shape[2])
    t3 = time.perf_counter()
    return ((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3), labels


def _cuda_step(
    model: torch.nn.Module, frames: np.ndarray, dev: torch.device
) -> tuple[tuple[float, float, float], np.ndarray]:  # pragma: no cover - needs a GPU
    events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    events[0].record()
    x = _pre(model, frames, dev)
    events[1].record()
    out = model(x)
    events[2].record()
    labels = _post(model, out, frames.shape[1], frames.shape[2])  # ends with a device -> host copy
    events[3].record()
    torch.cuda.synchronize(dev)
    return tuple(events[i].elapsed_time(events[i + 1]) for i in range(3)), labels  # type: ignore[return-value]
