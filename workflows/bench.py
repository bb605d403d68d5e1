"""``pem-deploy bench``: time artifacts (torch-free runtime) and PyTorch models side by side.

:func:`bench_models` times each ONNX / engine artifact with :func:`runtime.tools.bench.bench_artifact`
(once per backend asked for), each checkpoint and preset in PyTorch with
:func:`export.bench_torch.bench_torch`, and writes the reports; :func:`bench_baseline` is
``--baseline``, whole model against whole model (:mod:`export.baseline_bench`). PyTorch and
``export`` are imported only when a checkpoint, a preset or a baseline is timed, so artifacts are
timed in the torch-free install.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from contract.errors import UsageError
from contract.vocabulary import OFFICIAL_CHECKPOINT_SUFFIXES, OUR_CHECKPOINT_SUFFIXES
from runtime.tools.bench import (
    BenchError,
    BenchResult,
    bench_artifact,
    check_reports_target,
    parse_shape,
    write_reports,
)

if TYPE_CHECKING:
    from export.baseline_bench import BaselineComparison

# Files timed in PyTorch: our checkpoint and the official weights.
TORCH_SUFFIXES = OUR_CHECKPOINT_SUFFIXES + OFFICIAL_CHECKPOINT_SUFFIXES


@dataclass(frozen=True)
class BenchSettings:
    """How every model is timed. ``shape``: ``HxW`` (default: each model's input size)."""

    backends: tuple[str | None, ...] = (None,)  # ONNX artifacts: each side by side (None: by file type)
    providers: list[str] | None = None  # onnxruntime's (default: the best available)
    cuda_graph: bool = False
    device: str = "cpu"  # PyTorch's
    shape: str | None = None
    batch: int = 1
    warmup: int = 3
    iterations: int = 20
    threads: int = 1


@dataclass(frozen=True)
class ReportTarget:
    """Where the reports go (``bench.json``, ``.csv``, ``.md``, ``.png`` with ``plot``)."""

    out: str | os.PathLike[str]
    plot: bool = False
    exist_ok: bool = False
    overwrite: bool = False


def bench_models(
    artifacts: Sequence[str],
    presets: Sequence[str],
    settings: BenchSettings,
    reports: ReportTarget | None = None,
    on_note: Callable[[str], None] | None = None,
) -> tuple[list[BenchResult], tuple[list[Path], str | None] | None]:
    """Time ``artifacts`` (ONNX, engine or checkpoint) and ``presets`` (seeded random weights).

    The reports' folder is checked before the timing runs (the timed files and their sidecars
    are never written) and written after it. Returns the results and, with ``reports``, the
    written paths and a note. Raises :class:`UsageError` with nothing to time, :class:`BenchError`
    for a missing file, and what the timing raises.
    """
    if not artifacts and not presets:
        raise UsageError("give one or more artifacts (ONNX, engine, .safetensors) or --preset NAME")
    read = [p for item in artifacts for p in (Path(item), Path(item).with_suffix(".json"))]
    if reports is not None:
        check_reports_target(
            reports.out,
            plot=reports.plot,
            exist_ok=reports.exist_ok,
            overwrite=reports.overwrite,
            inputs=read,
        )
    size = parse_shape(settings.shape) if settings.shape else None
    results: list[BenchResult] = []
    for item in artifacts:
        if not Path(item).exists():
            raise BenchError(f"{item}: no such file or folder")
        if Path(item).suffix in TORCH_SUFFIXES:
            results.append(_bench_torch(item, None, size, settings))
        else:
            results += [
                _bench_artifact(item, backend, size, settings, on_note) for backend in settings.backends
            ]
    results += [_bench_torch(None, name, size, settings) for name in presets]
    if reports is None:
        return results, None
    written = write_reports(
        results,
        reports.out,
        plot=reports.plot,
        exist_ok=reports.exist_ok,
        overwrite=reports.overwrite,
        inputs=read,
    )
    return results, written


def _bench_artifact(
    item: str,
    backend: str | None,
    size: tuple[int, int] | None,
    settings: BenchSettings,
    on_note: Callable[[str], None] | None,
) -> BenchResult:
    return bench_artifact(
        item, shape=size, batch=settings.batch, warmup=settings.warmup, iterations=settings.iterations,
        threads=settings.threads, providers=settings.providers, name=item, cuda_graph=settings.cuda_graph,
        backend=backend, on_note=on_note,
    )  # fmt: skip


def _bench_torch(
    checkpoint: str | None, preset: str | None, size: tuple[int, int] | None, settings: BenchSettings
) -> BenchResult:
    from export.bench_torch import bench_torch

    return bench_torch(
        checkpoint=checkpoint, preset=preset, device=settings.device, shape=size, batch=settings.batch,
        warmup=settings.warmup, iterations=settings.iterations, threads=settings.threads,
        name=checkpoint or preset,
    )  # fmt: skip


def bench_baseline(
    presets: Sequence[str],
    baseline: str,
    settings: BenchSettings,
    *,
    rounds: int = 2,
    backends: Sequence[str] = (),
    out: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[BaselineComparison], list[Path] | None]:
    """``bench --baseline``: each preset against ``baseline`` (and PEM STDC1), eager and onnxruntime
    (``backends`` picks one of ``torch`` / ``onnxruntime``; default both); writes ``baseline.json``
    and ``.md`` into ``out``. Returns the comparisons and the written paths."""
    from export.baseline_bench import BACKENDS, compare_with_baseline, write_comparisons

    size = parse_shape(settings.shape) if settings.shape else None
    results = [
        compare_with_baseline(
            name,
            baseline,
            shape=size,
            rounds=rounds,
            warmup=settings.warmup,
            iterations=settings.iterations,
            threads=settings.threads or 1,
            backends=tuple(backends) or BACKENDS,
            log=log,
        )
        for name in presets
    ]
    return results, (write_comparisons(results, out) if out else None)
