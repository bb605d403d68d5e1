"""Shared helpers of the benchmark scripts (run them as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def interleaved(
    fns: dict[str, Callable[[], object]], runs: int, warmup: int, raw: dict[str, list[float]] | None = None
) -> dict[str, float]:
    """Median ms of each callable, the variants alternating run by run (so load hits all alike).

    ``raw``, when given, receives every run's time per variant.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(runs):
        order = list(fns) if i % 2 == 0 else list(reversed(fns))
        for k in order:
            start = time.perf_counter()
            fns[k]()
            times[k].append((time.perf_counter() - start) * 1e3)
    if raw is not None:
        raw.update({k: [round(t, 1) for t in v] for k, v in times.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def ort_session(model: Path | str | bytes, profile_prefix: str | None = None):
    """A single-threaded onnxruntime CPU session (one thread, like the PyTorch side)."""
    from runtime.core.backends.ort_session import create_session

    return create_session(model, threads=1, profile_prefix=profile_prefix)


def cpu_description() -> dict[str, object]:
    """CPU model name (from ``lscpu`` when available) and core count, for the result tables."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line)
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return {"cpu": model, "cores": os.cpu_count()}


def report_json(result: object, out: Path | None) -> None:
    """Print ``result`` as indented JSON, and write it to ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
