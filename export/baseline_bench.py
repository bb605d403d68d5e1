"""The paper's headline on this machine: PEM against the Mask2Former baseline, whole model (issue 24).

:func:`compare_with_baseline` times, side by side and interleaved, the forward pass (images in,
class and mask logits out; post-processing excluded in every row) of

- PEM with the preset's architecture (e.g. ``cityscapes-panoptic-r50``),
- the baseline (``mask2former-r50``: :mod:`pem.mask2former` with the preset's classes),
- PEM STDC1 of the same dataset and task, when the preset is an R50 one,

in eager PyTorch and in onnxruntime (CPU provider, the graph exported with our exporter), for
``rounds`` rounds, and reports each round's time ratio PEM / baseline next to the paper's FPS
ratio (baseline FPS / PEM FPS: 0.30 panoptic, 0.48 semantic) and FLOP ratio (0.46). Weights are
seeded random: speed does not depend on them (every attention here is dense, masks included).
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.errors import ExportError

#: ``--baseline`` names -> architecture of :func:`pem.flops.count_cost`.
BASELINES: dict[str, str] = {"mask2former-r50": "mask2former"}
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")
#: The baseline's forward memory as a multiple of PEM's estimate (:func:`pem.config.estimate_forward_bytes`).
BASELINE_MEMORY_FACTOR = 2


@dataclass(frozen=True)
class ModelTiming:
    """One model in one backend in one round: milliseconds per forward pass (batch of one)."""

    model: str
    backend: str
    round: int
    times_ms: list[float]
    peak_rss_mb: float

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)


@dataclass
class BaselineComparison:
    """PEM vs baseline timings and the paper's ratios; ``models[0]`` is PEM, ``models[1]`` the baseline."""

    preset: str
    baseline: str
    shape: tuple[int, int]
    models: list[str]
    gmacs: dict[str, float]
    params_m: dict[str, float]
    paper_fps_ratio: float | None
    paper_flop_ratio: float | None
    timings: list[ModelTiming] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def median(self, model: str, backend: str, round_: int) -> float | None:
        for t in self.timings:
            if (t.model, t.backend, t.round) == (model, backend, round_):
                return t.median_ms
        return None

    def time_ratio(self, backend: str, round_: int) -> float | None:
        """PEM time / baseline time (= baseline FPS / PEM FPS, the paper's ratio's direction)."""
        ours, theirs = (
            self.median(self.models[0], backend, round_),
            self.median(self.models[1], backend, round_),
        )
        return ours / theirs if ours and theirs else None

    @property
    def flop_ratio(self) -> float:
        return self.gmacs[self.models[0]] / self.gmacs[self.models[1]]

    @property
    def rounds(self) -> list[int]:
        return sorted({t.round for t in self.timings})

    @property
    def backends(self) -> list[str]:
        return [b for b in BACKENDS if any(t.backend == b for t in self.timings)]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["time_ratios"] = {b: [self.time_ratio(b, r) for r in self.rounds] for b in self.backends}
        data["flop_ratio"] = self.flop_ratio
        return data

    def table(self) -> str:
        """Markdown: per model and backend, the median ms of every round; then the ratios."""
        h, w = self.shape
        rounds = self.rounds
        head = "| model | GMACs | params (M) | backend | " + " | ".join(f"round {r} ms" for r in rounds)
        lines = [
            f"{self.models[0]} vs {self.models[1]} at {h}x{w}, forward pass, median ms per frame",
            "",
            head + " | peak RSS MiB |",
            "|" + "---|" * (len(rounds) + 5),
        ]
        for model in self.models:
            for backend in self.backends:
                cells = [self.median(model, backend, r) for r in rounds]
                peak = max(
                    (t.peak_rss_mb for t in self.timings if (t.model, t.backend) == (model, backend)),
                    default=0,
                )
                lines.append(
                    f"| {model} | {self.gmacs[model]:.1f} | {self.params_m[model]:.2f} | {backend} | "
                    + " | ".join("-" if c is None else f"{c:.0f}" for c in cells)
                    + f" | {peak:.0f} |"
                )
        lines += ["", "| ratio PEM / baseline | " + " | ".join(f"round {r}" for r in rounds) + " | paper |"]
        lines.append("|" + "---|" * (len(rounds) + 2))
        paper_fps = "-" if self.paper_fps_ratio is None else f"{self.paper_fps_ratio:.2f} (FPS)"
        for backend in self.backends:
            ratios = [self.time_ratio(backend, r) for r in rounds]
            lines.append(
                f"| time, {backend} | "
                + " | ".join("-" if r is None else f"{r:.2f}" for r in ratios)
                + f" | {paper_fps} |"
            )
        paper_flops = "-" if self.paper_flop_ratio is None else f"{self.paper_flop_ratio:.2f}"
        lines.append(
            "| FLOPs (counted) | "
            + " | ".join(f"{self.flop_ratio:.2f}" for _ in rounds)
            + f" | {paper_flops} |"
        )
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def _machine(threads: int) -> dict[str, Any]:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    available = None
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "load_average_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "mem_available_mib_start": available,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _models(preset: str, baseline: str, shape: tuple[int, int], seed: int) -> dict[str, torch.nn.Module]:
    from pem.config import get_preset, preset_names
    from pem.mask2former import build_mask2former
    from pem.model import PEM

    cfg = get_preset(preset).replace(input_size=shape)
    builders: dict[str, Callable[[], torch.nn.Module]] = {
        f"pem {preset}": lambda: PEM(cfg),
        f"{baseline} ({preset})": lambda: build_mask2former(cfg),
    }
    stdc1 = preset.removesuffix("-r50") + "-stdc1"
    if preset.endswith("-r50") and stdc1 in preset_names():
        stdc_cfg = get_preset(stdc1).replace(input_size=shape)
        builders[f"pem {stdc1}"] = lambda: PEM(stdc_cfg)
    models = {}
    for name, build in builders.items():
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            models[name] = build().eval().requires_grad_(False)
    return models


def wall_times_ms(fn: Callable[[], object], warmup: int, iterations: int) -> list[float]:
    """Wall-clock milliseconds of ``iterations`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def compare_with_baseline(
    preset: str,
    baseline: str = "mask2former-r50",
    *,
    shape: tuple[int, int] | None = None,
    rounds: int = 2,
    warmup: int = 1,
    iterations: int = 3,
    threads: int = 1,
    backends: tuple[str, ...] = BACKENDS,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> BaselineComparison:
    """Time PEM, the baseline and PEM STDC1 side by side, ``rounds`` times, interleaved.

    ``shape`` (H, W), multiples of 32; default the preset's input size (1024x2048 for Cityscapes).
    ``log`` gets a line before every measurement (long runs: minutes at full size on a CPU).

    Raises:
        ExportError: an unknown preset / baseline / backend, or a bad count.
        contract.resources.ResourceError: the size cannot fit in this machine's memory.
    """
    from pem.flops import count_parameters
    from pem.paper import PAPER_FPS, paper_row
    from runtime.tools.bench import bench_image

    say = log or (lambda _line: None)
    if baseline not in BASELINES:
        raise ExportError(f"--baseline {baseline}: choose from {', '.join(BASELINES)}")
    for backend in backends:
        if backend not in BACKENDS:
            raise ExportError(f"backend {backend}: choose from {', '.join(BACKENDS)}")
    if rounds < 1 or iterations < 1 or warmup < 0 or threads < 1:
        raise ExportError("--rounds, --iterations and --threads must be >= 1, --warmup >= 0")
    h, w = _checked_shape(preset, baseline, shape)
    models = _models(preset, baseline, (h, w), seed)
    names = list(models)
    fps = PAPER_FPS.get(preset)
    pem_row, base_row = paper_row(preset), paper_row(preset, BASELINES[baseline])
    result = BaselineComparison(
        preset=preset,
        baseline=baseline,
        shape=(h, w),
        models=names,
        gmacs=_gmacs(names, preset, baseline, (h, w)),
        params_m={n: count_parameters(m) / 1e6 for n, m in models.items()},
        paper_fps_ratio=fps[BASELINES[baseline]] / fps["pem"] if fps else None,
        paper_flop_ratio=pem_row.gflops / base_row.gflops if pem_row and base_row else None,
        machine=_machine(threads),
        notes=[
            "forward pass only (normalised image in, class + mask logits out); post-processing excluded",
            "seeded random weights; onnxruntime: CPU provider, TorchScript-exported graph, all optimisations",
            f"{threads} thread(s) for PyTorch and onnxruntime; {warmup} warm-up + {iterations} timed calls"
            " per model, backend and round; rounds interleave the models",
        ],
    )
    image = bench_image(h, w)
    images = models[names[0]].normalize(torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)[None])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="pem-baseline-") as tmp:
            onnx_paths = _export_all(models, images, Path(tmp), say) if "onnxruntime" in backends else {}
            runs = (warmup, iterations, threads)
            for round_ in range(1, rounds + 1):
                timings = _time_round(models, images, onnx_paths, backends, (round_, rounds), runs, say)
                result.timings += timings
    finally:
        torch.set_num_threads(before)
    if hasattr(os, "getloadavg"):
        result.machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _checked_shape(preset: str, baseline: str, shape: tuple[int, int] | None) -> tuple[int, int]:
    """The (H, W) to time at, once the preset is known and both models fit in memory there."""
    from contract.resources import check_memory
    from pem.config import ConfigError, estimate_forward_bytes, get_preset

    try:
        config = get_preset(preset)
    except ConfigError as exc:
        raise ExportError(f"--preset {preset}: {exc}") from None
    h, w = shape or config.input_size
    if h % 32 or w % 32:
        raise ExportError(f"--shape {h}x{w}: height and width must be multiples of 32")
    # Mask2Former's forward needs about twice PEM's (1.7x measured at 1024x2048 in onnxruntime).
    check_memory(
        f"PEM and {baseline} at {h}x{w},",
        BASELINE_MEMORY_FACTOR * estimate_forward_bytes(config, h, w, 1),
    )
    return h, w


def _gmacs(names: list[str], preset: str, baseline: str, shape: tuple[int, int]) -> dict[str, float]:
    """fvcore GMACs of each timed model (PEM, the baseline, and PEM STDC1 when it is timed)."""
    from pem.config import get_preset
    from pem.flops import count_cost

    arch = {names[0]: ("pem", preset), names[1]: (BASELINES[baseline], preset)}
    if len(names) > 2:
        arch[names[2]] = ("pem", names[2].removeprefix("pem "))
    gmacs = {}
    for name, (architecture, name_preset) in arch.items():
        gmacs[name] = count_cost(get_preset(name_preset), shape, architecture=architecture).gflops_fvcore
    return gmacs


def _time_round(
    models: dict[str, torch.nn.Module],
    images: torch.Tensor,
    onnx_paths: dict[str, Path],
    backends: tuple[str, ...],
    round_of: tuple[int, int],
    runs: tuple[int, int, int],
    say: Callable[[str], None],
) -> list[ModelTiming]:
    """Round ``round_of`` (this one, of how many): every model on every backend (``runs``:
    warm-up, iterations, threads)."""
    from runtime.tools.bench import peak_rss_mb, reset_peak_rss

    round_, rounds = round_of
    h, w = images.shape[-2:]
    warmup, iterations, threads = runs
    timings = []
    for name, model in models.items():
        for backend in backends:
            say(f"round {round_}/{rounds}: {name}, {backend}, {h}x{w}")
            gc.collect()
            reset_peak_rss()
            if backend == "torch":
                with torch.inference_mode():
                    times = wall_times_ms(lambda m=model: m(images), warmup, iterations)
            else:
                times = _time_ort(onnx_paths[name], images.numpy(), warmup, iterations, threads)
            timings.append(ModelTiming(name, backend, round_, times, peak_rss_mb()))
            say(f"  median {statistics.median(times):.0f} ms")
    return timings


def _export_all(
    models: dict[str, torch.nn.Module], images: torch.Tensor, folder: Path, say: Callable[[str], None]
) -> dict[str, Path]:
    import onnx

    paths = {}
    for i, (name, model) in enumerate(models.items()):
        say(f"exporting {name} to ONNX")
        proto = raw_onnx(model, images)
        paths[name] = folder / f"model{i}.onnx"
        onnx.save(proto, str(paths[name]))
        del proto
        gc.collect()
    return paths


def raw_onnx(model: torch.nn.Module, images: torch.Tensor) -> Any:
    """``model``'s raw head (``pred_logits``, ``pred_masks``) as an ONNX ModelProto for timing:
    the TorchScript exporter, no pre-processing, the input named ``images``."""
    from export.heads import ExportedModel
    from export.onnx_export import export_to_onnx

    return export_to_onnx(
        ExportedModel(model, "raw", "none"),
        (images,),
        input_names=["images"],
        output_names=["pred_logits", "pred_masks"],
        exporter="torchscript",
    )


def _time_ort(path: Path, images: np.ndarray, warmup: int, iterations: int, threads: int) -> list[float]:
    from runtime.core.backends.ort_session import create_session

    session = create_session(path, threads=threads, error=ExportError)
    # The session (and its memory arena) is dropped on return, before the next model's is made.
    return wall_times_ms(lambda: session.run(None, {"images": images}), warmup, iterations)


def write_comparisons(results: list[BaselineComparison], folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``baseline.json`` and ``baseline.md`` into ``folder`` (each atomically); their paths."""
    import json

    from contract.fs import atomic_write_text

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "baseline.json", out / "baseline.md"]
    atomic_write_text(paths[0], json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    atomic_write_text(paths[1], "\n\n".join(r.table() for r in results) + "\n")
    return paths
