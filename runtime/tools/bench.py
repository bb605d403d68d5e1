"""Latency benchmarks of deployed artifacts (torch-free) and the report writers ``pem-deploy bench`` uses.

- :func:`bench_artifact`: time an ONNX model or TensorRT engine through :class:`runtime.Segmenter`,
  so the per-stage times (``pre`` / ``infer`` / ``post``) are those a pipeline sees.
- :func:`summarize`: latencies (ms per batch) -> :class:`BenchResult` (mean / p50 / p90 / p99, FPS,
  throughput in images/s, peak memory, mean per-stage times). PyTorch timings
  (:mod:`export.bench_torch`) use the same record.
- :func:`format_table`, :func:`write_reports`: the side-by-side table, JSON + CSV + markdown files and
  (when matplotlib is installed) a PNG plot, every file written atomically.

Never imports torch.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contract.fs import atomic_write_bytes
from contract.output import check_folder, staged_folder
from contract.resources import check_memory
from runtime.errors import RuntimeToolError

#: Per-frame stages of the table, in pipeline order. ``infer`` (h2d + compute + d2h, as timed around
#: the backend call) is kept in ``stages_ms`` too. ``encode``: the label map (and panoptic ids) as the
#: PNGs ``pem-deploy infer`` writes, in memory.
STAGES = ("pre", "h2d", "compute", "d2h", "post", "encode")
COPY_STAGES = ("h2d", "d2h")
#: ``BenchResult.copies`` values: how the copy columns were obtained.
COPY_NOTES = {
    "none": "0: the backend runs in host memory (CPU), there are no host<->device copies",
    "measured": "measured by the backend (onnxruntime I/O binding)",
    "inside compute": "not separable by this backend: included in compute",
    "inside pre/post": "PyTorch: the upload is in pre, the download in post",
}


class BenchError(RuntimeToolError):
    """Bad benchmark argument or artifact; one line naming it."""


@dataclass
class BenchResult:
    """One artifact's timings. Latencies are milliseconds per call (one call = one batch)."""

    name: str
    backend: str
    precision: str
    device: str
    shape: tuple[int, int]
    batch: int
    warmup: int
    iterations: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    fps: float  # calls per second (1000 / mean)
    throughput: float  # images per second (batch * fps)
    peak_memory_mb: float | None
    memory_kind: str  # "rss" (process peak resident set) or "cuda" (max allocated)
    stages_ms: dict[str, float] = field(default_factory=dict)  # mean per image and stage
    path: str = ""
    copies: str = ""  # a key of COPY_NOTES: how the h2d / d2h columns were obtained
    versions: dict[str, Any] = field(default_factory=dict)  # runtime_versions() of the run

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data


def summarize(
    latencies_ms: Sequence[float],
    *,
    name: str,
    backend: str,
    precision: str,
    device: str,
    shape: tuple[int, int],
    batch: int,
    warmup: int,
    stages_ms: dict[str, Sequence[float]] | None = None,
    peak_memory_mb: float | None = None,
    memory_kind: str = "rss",
    path: str = "",
    copies: str = "",
    versions: dict[str, Any] | None = None,
) -> BenchResult:
    """Statistics of measured latencies (milliseconds per batch of ``batch`` images)."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        raise BenchError("--iterations: need at least one timed iteration")
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    mean = float(values.mean())
    stages = {k: float(np.mean(v)) for k, v in (stages_ms or {}).items() if len(v)}
    return BenchResult(
        name=name,
        backend=backend,
        precision=precision,
        device=device,
        shape=(int(shape[0]), int(shape[1])),
        batch=batch,
        warmup=warmup,
        iterations=int(values.size),
        mean_ms=mean,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        fps=1000.0 / mean if mean > 0 else float("inf"),
        throughput=batch * 1000.0 / mean if mean > 0 else float("inf"),
        peak_memory_mb=peak_memory_mb,
        memory_kind=memory_kind,
        stages_ms=stages,
        path=path,
        copies=copies,
        versions=dict(versions or {}),
    )


# -- memory ------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux ``clear_refs``); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``VmHWM``, else ``getrusage``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


# -- runtime artifacts -------------------------------------------------------------------------


def bench_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 BGR frame: smooth gradients plus noise (not all zeros)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / max(width, 1), y / max(height, 1), (x + y) / max(width + height, 1)], -1) * 200
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


#: Bytes per pixel of a frame in the runtime: the uint8 frame, its float copy, resized copies, labels.
FRAME_BYTES_PER_PIXEL = 32
#: Bytes per model-input pixel of a model run, a lower bound for the models of this project.
MODEL_BYTES_PER_PIXEL = 256


def artifact_bench_bytes(
    model_h: int | None, model_w: int | None, frame_h: int, frame_w: int, batch: int
) -> int:
    """Estimated memory of benchmarking an artifact on ``batch`` frames of ``frame_h`` x ``frame_w``.

    A static model runs at its own size (the frames are resized to it); a dynamic one at the frame's.
    """
    run_h, run_w = (model_h, model_w) if model_h and model_w else (frame_h, frame_w)
    return batch * (frame_h * frame_w * FRAME_BYTES_PER_PIXEL + run_h * run_w * MODEL_BYTES_PER_PIXEL)


def bench_artifact(
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int] | None = None,
    batch: int = 1,
    warmup: int = 3,
    iterations: int = 20,
    threads: int = 1,
    providers: list[str] | None = None,
    name: str | None = None,
    cuda_graph: bool = False,
    backend: str | None = None,
    on_note: Callable[[str], None] | None = None,
) -> BenchResult:
    """Time ``Segmenter.predict_batch`` on an ONNX / engine artifact (model file, sidecar or folder).

    ``cuda_graph``: replay inference as a CUDA graph (TensorRT engines, GPU providers; on a CPU
    provider it does nothing, which ``on_note`` is told, one line per such note).
    ``backend``: run it with this backend (``onnxruntime`` / ``openvino`` for ONNX; default: the
    one its file type asks for).

    ``shape`` is the (H, W) of the frames fed in (default: the model's input size; the
    preprocessing resizes to the model). Latency is wall time per call of ``batch`` frames.
    """
    from runtime.core.segmenter import Segmenter
    from runtime.errors import ArtifactError, BackendUnavailableError

    _check_counts(batch, warmup, iterations)
    if not Path(path).exists():
        raise BenchError(f"{path}: no such artifact")
    try:
        reset_peak_rss()
        seg = Segmenter.open(
            path, providers=providers, threads=threads, cuda_graph=cuda_graph, backend=backend
        )
    except (ArtifactError, BackendUnavailableError) as exc:
        raise BenchError(str(exc)) from None
    for note in seg.notes:
        if on_note is not None:
            on_note(note)
    with seg:
        fmt = seg.artifact.input_format
        h, w = shape or (int(fmt.height or 0), int(fmt.width or 0))
        if h <= 0 or w <= 0:
            raise BenchError(f"{path}: dynamic input size; give --shape HxW")
        check_memory(
            f"bench at {h}x{w}, batch {batch},", artifact_bench_bytes(fmt.height, fmt.width, h, w, batch)
        )
        frames = [bench_image(h, w, seed=i) for i in range(batch)]
        latencies, stages = _time_segmenter(seg, frames, warmup, iterations)
        artifact = seg.artifact
        runner = seg.backend.name
        device = "gpu" if runner == "tensorrt" else ("cpu" if runner == "openvino" else _ort_device(seg))
        return summarize(
            latencies,
            name=name or Path(artifact.model_path).parent.name + "/" + Path(artifact.model_path).name,
            backend=runner,
            precision=artifact.precision,
            device=device,
            shape=(h, w),
            batch=batch,
            warmup=warmup,
            stages_ms=stages,
            peak_memory_mb=peak_rss_mb(),
            memory_kind="rss",
            path=str(artifact.model_path),
            copies=seg.backend.copy_timing,
            versions=runtime_versions(),
        )


def _time_segmenter(
    seg: Any, frames: list[np.ndarray], warmup: int, iterations: int
) -> tuple[list[float], dict[str, list[float]]]:
    """Milliseconds of each timed ``predict_batch`` call (results encoded as a caller would), and
    of each stage per frame."""
    for _ in range(warmup):
        encode_result(seg.predict_batch(frames)[0])
    latencies: list[float] = []
    stages: dict[str, list[float]] = {k: [] for k in (*STAGES, "infer")}
    for _ in range(iterations):
        t0 = time.perf_counter()
        results = seg.predict_batch(frames)
        t1 = time.perf_counter()
        for r in results:
            encode_result(r)
        t2 = time.perf_counter()
        latencies.append((t2 - t0) * 1e3)
        stages["encode"].append((t2 - t1) * 1e3 / len(results))
        for k in stages:
            if k != "encode" and all(k in r.timings for r in results):
                stages[k].append(float(np.mean([r.timings[k] for r in results])))
    return latencies, stages


def encode_result(result: Any) -> int:
    """Encode a :class:`runtime.core.segmenter.Result` as ``pem-deploy infer`` writes it (label PNG, and
    the 16-bit panoptic PNG when there is one), in memory; returns the encoded bytes."""
    import cv2

    from runtime.core.postprocess import label_png_array

    size = 0
    maps = [("labels", result.labels, "labels", None)]
    if result.panoptic is not None:
        maps.append(("panoptic", result.panoptic, "panoptic", 16))
    for name, values, kind, bits in maps:
        ok, buf = cv2.imencode(".png", label_png_array(values, name, kind, bits))
        if not ok:
            raise BenchError(f"cannot encode the {name} map as PNG")
        size += buf.size
    return size


def _run(command: list[str]) -> str | None:
    import subprocess

    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def runtime_versions() -> dict[str, Any]:
    """Versions and device state a benchmark depends on, as far as this machine can tell.

    onnxruntime (and its providers), OpenVINO, TensorRT, the CUDA runtime and driver, the GPU and
    its current / maximum clocks (NVML, through ``pynvml`` when installed), and on a Jetson the
    L4T / JetPack release and the ``nvpmodel`` power mode. Absent components are left out.
    """
    info: dict[str, Any] = {"python": sys.version.split()[0], "numpy": np.__version__}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    for module, key in (("openvino", "openvino"), ("tensorrt", "tensorrt")):
        with contextlib.suppress(ImportError, AttributeError):
            info[key] = __import__(module).__version__
    try:
        from cuda import cudart  # type: ignore[import-not-found]

        err, version = cudart.cudaRuntimeGetVersion()
        if int(err) == 0:
            info["cuda_runtime"] = f"{version // 1000}.{version % 1000 // 10}"
        err, version = cudart.cudaDriverGetVersion()
        if int(err) == 0:
            info["cuda_driver_api"] = f"{version // 1000}.{version % 1000 // 10}"
    except Exception:  # cuda-python absent or no device: leave it out
        pass
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            name = pynvml.nvmlDeviceGetName(handle)
            info["gpu"] = name.decode() if isinstance(name, bytes) else name
            driver = pynvml.nvmlSystemGetDriverVersion()
            info["driver"] = driver.decode() if isinstance(driver, bytes) else driver
            clocks = {}
            for label, kind in (("sm", pynvml.NVML_CLOCK_SM), ("memory", pynvml.NVML_CLOCK_MEM)):
                clocks[f"{label}_mhz"] = pynvml.nvmlDeviceGetClockInfo(handle, kind)
                clocks[f"{label}_max_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, kind)
            info["gpu_clocks"] = clocks
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # pynvml absent or no NVIDIA driver: leave it out
        pass
    tegra = Path("/etc/nv_tegra_release")
    if tegra.is_file():
        info["l4t"] = tegra.read_text(errors="replace").splitlines()[0].strip()
        jetpack = _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
        if jetpack:
            info["jetpack"] = jetpack
        power = _run(["nvpmodel", "-q"])
        if power:
            info["power_mode"] = power.splitlines()[0]
    return info


def _ort_device(seg: Any) -> str:
    session = getattr(seg.backend, "session", None)
    providers = session.get_providers() if session is not None else []
    return "gpu" if any(p != "CPUExecutionProvider" for p in providers) else "cpu"


def _check_counts(batch: int, warmup: int, iterations: int) -> None:
    if batch < 1:
        raise BenchError(f"--batch {batch}: must be >= 1")
    if warmup < 0:
        raise BenchError(f"--warmup {warmup}: must be >= 0")
    if iterations < 1:
        raise BenchError(f"--iterations {iterations}: must be >= 1")


def parse_shape(text: str) -> tuple[int, int]:
    """``"256x512"`` -> (256, 512)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchError(f"--shape {text}: expected HxW, e.g. 256x512") from None
    if h <= 0 or w <= 0:
        raise BenchError(f"--shape {text}: sides must be positive")
    return h, w


# -- reports -----------------------------------------------------------------------------------

COLUMNS = (
    ("name", "artifact"),
    ("backend", "backend"),
    ("precision", "precision"),
    ("device", "device"),
    ("batch", "batch"),
    # Latency per call (a call carries `batch` images); throughput and stages per image.
    ("mean_ms", "mean ms/call"),
    ("p50_ms", "p50 ms/call"),
    ("p90_ms", "p90 ms/call"),
    ("p99_ms", "p99 ms/call"),
    ("fps", "calls/s"),
    ("throughput", "img/s"),
    ("peak_memory_mb", "peak MiB"),
    ("pre", "pre ms/img"),
    ("h2d", "h2d ms/img"),
    ("compute", "compute ms/img"),
    ("d2h", "d2h ms/img"),
    ("post", "post ms/img"),
    ("encode", "encode ms/img"),
)


def _row(result: BenchResult) -> list[str]:
    data = result.to_dict()
    cells = []
    for key, _ in COLUMNS:
        value = result.stages_ms.get(key) if key in STAGES else data[key]
        if value is None and key in COPY_STAGES and result.copies in ("inside compute", "inside pre/post"):
            cells.append("in " + result.copies.split()[-1])  # "in compute" / "in pre/post", never blank
        elif value is None:
            cells.append("-")
        elif isinstance(value, float):
            cells.append(f"{value:.1f}" if key in ("fps", "throughput", "peak_memory_mb") else f"{value:.2f}")
        else:
            cells.append(str(value))
    return cells


def format_table(results: Sequence[BenchResult]) -> str:
    """Side-by-side plain-text table for the terminal."""
    rows = [[title for _, title in COLUMNS]] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + copy_notes(results))


def copy_notes(results: Sequence[BenchResult]) -> list[str]:
    """One line per kind of copy column in ``results``: what h2d / d2h mean there."""
    kinds = dict.fromkeys(r.copies for r in results if r.copies)
    return [f"h2d / d2h ({kind}): {COPY_NOTES.get(kind, kind)}" for kind in kinds]


def markdown_table(results: Sequence[BenchResult]) -> str:
    """The same table as GitHub markdown."""
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    notes = ["", *(f"- {line}" for line in copy_notes(results))] if copy_notes(results) else []
    return "\n".join([head, rule] + ["| " + " | ".join(_row(r)) + " |" for r in results] + notes)


def report_names(stem: str = "bench", plot: bool = False) -> list[str]:
    """The files :func:`write_reports` writes into its folder."""
    return [f"{stem}.{suffix}" for suffix in ("json", "csv", "md", *(("png",) if plot else ()))]


def check_reports_target(
    out_dir: str | os.PathLike[str],
    *,
    stem: str = "bench",
    plot: bool = False,
    exist_ok: bool = False,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Refuse an ``out_dir`` :func:`write_reports` would refuse, before the timing runs."""
    check_folder(
        out_dir, exist_ok=exist_ok, overwrite=overwrite, inputs=inputs, names=report_names(stem, plot)
    )


def write_reports(
    results: Sequence[BenchResult],
    out_dir: str | os.PathLike[str],
    *,
    stem: str = "bench",
    plot: bool = False,
    context: dict[str, Any] | None = None,
    exist_ok: bool = False,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> tuple[list[Path], str | None]:
    """Write ``STEM.json``, ``STEM.csv``, ``STEM.md`` (and ``STEM.png`` with ``plot``) into ``out_dir``.

    All reports or none, by the rules of :mod:`contract.output`: a folder holding other files
    needs ``exist_ok``, a report file there that pem-deploy did not write needs ``overwrite``,
    and the benchmarked artifacts (``inputs``) are never written. Returns the written paths and a
    note when the plot was skipped (matplotlib missing).
    """
    names = report_names(stem, plot)
    with staged_folder(out_dir, exist_ok=exist_ok, overwrite=overwrite, inputs=inputs, names=names) as out:
        payload = {"context": context or {}, "results": [r.to_dict() for r in results]}
        out.write(f"{stem}.json", json.dumps(payload, indent=2) + "\n")
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        keys = [k for k, _ in COLUMNS if k not in STAGES] + [f"{k}_ms" for k in (*STAGES, "infer")]
        keys.append("copies")
        writer.writerow(keys)
        for r in results:
            data = r.to_dict()
            writer.writerow([data[k] if k in data else r.stages_ms.get(k[:-3], "") for k in keys])
        out.write(f"{stem}.csv", buffer.getvalue())
        lines = ["# Benchmark", ""]
        if context:
            lines += [", ".join(f"{k}: {v}" for k, v in context.items()), ""]
        lines += [markdown_table(results), ""]
        out.write(f"{stem}.md", "\n".join(lines))
        note = plot_results(results, out.path(f"{stem}.png"), context) if plot else None
        paths = out.commit()
    return paths, note


def _short_label(result: BenchResult) -> str:
    """``folder/model.onnx`` -> ``folder`` plus backend and precision on a second line."""
    path = Path(result.name)
    name = path.parent.name if path.suffix and path.parent.name else (path.stem or result.name)
    return f"{name}\n{result.backend} {result.precision}"


def plot_results(
    results: Sequence[BenchResult], path: Path, context: dict[str, Any] | None = None
) -> str | None:
    """Stacked pre / infer / post bar chart with p50 / p90 markers, titled with the input shape,
    device and threads of the run; a note if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed"
    names = [_short_label(r) for r in results]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(results) + 2), 3.5))
    bottom = np.zeros(len(results))
    for stage in STAGES:
        values = np.array([r.stages_ms.get(stage, 0.0) * r.batch for r in results])
        if values.any():
            ax.bar(names, values, bottom=bottom, label=stage)
            bottom += values
    ax.scatter(names, [r.p50_ms for r in results], color="k", marker="_", s=300, label="p50", zorder=3)
    ax.scatter(names, [r.p90_ms for r in results], color="r", marker="_", s=300, label="p90", zorder=3)
    ax.set_ylabel("ms per call")
    context = context or {}
    devices = ", ".join(sorted({r.device for r in results}))
    batches = ", ".join(str(b) for b in sorted({r.batch for r in results}))
    shape = context.get("shape") or ", ".join(sorted({f"{r.shape[0]}x{r.shape[1]}" for r in results}))
    title = [f"input {shape}" if shape else "", f"device {devices}", f"batch {batches}"]
    if context.get("threads") is not None:
        title.append(f"{context['threads']} thread(s)")
    ax.set_title("latency: " + ", ".join(part for part in title if part), fontsize=9)
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return None
