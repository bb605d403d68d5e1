"""``pem-deploy demo``: the whole toolchain on the embedded default, no downloads.

Steps (each shown on a terminal, quiet otherwise):

1. the synthetic Cityscapes-format set (:func:`pem.zoo.default_dataset_path`, cached);
2. the trained tiny panoptic model (:func:`pem.zoo.ensure_default_checkpoint`, cached);
3. FP32 and FP16 ONNX exports, INT8 calibration with the FP32 / FP16 / INT8 accuracy report;
4. parity of every ONNX artifact against PyTorch (:func:`export.check.check_artifact`, the one
   comparison engine :mod:`runtime.tools.compare`);
5. latency of PyTorch and the three artifacts (:mod:`export.bench_torch`, :mod:`runtime.tools.bench`);
6. overlays of a few validation images from the runtime (:func:`runtime.io.batch_infer.infer_path`);
7. ``report.md`` (plus ``bench.json/.csv/.md``) in the output folder.

Everything is written through :mod:`contract.output` as one output folder: staged, then moved
in at the end (a failure leaves the folder as it was). A folder holding files the demo did not
write is refused unless ``exist_ok`` (the demo's files are then added beside them; its own from
an earlier demo are replaced), and a file at one of the demo's names that pem-deploy did not
write (a user's ``report.md``, a photo in ``inputs/``) is never replaced unless ``overwrite``.

``quick=True`` uses the ``"quick"`` default model, few calibration / evaluation images and few
timing iterations (the tests' mode, well under a minute with a warm cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote and measured."""

    out_dir: Path
    report_path: Path
    artifacts: dict[str, Path]
    accuracy: dict[str, Any] | None
    parity: dict[str, dict[str, Any]]
    bench: list[Any]
    bench_table: str
    overlays: list[Path] = field(default_factory=list)
    legend: Path | None = None
    classes: list[str] = field(default_factory=list)  # the model's classes, by id
    predicted_classes: list[int] = field(default_factory=list)  # those in the overlays (FP32)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def parity_passed(self) -> bool:
        return all(entry["passed"] for entry in self.parity.values())


def run_demo(
    out_dir: str | os.PathLike[str] = "pem-demo",
    *,
    quick: bool = False,
    iterations: int | None = None,
    warmup: int | None = None,
    images: int | None = None,
    threads: int = 1,
    plot: bool = True,
    progress: Progress | None = None,
    exist_ok: bool = False,
    overwrite: bool = False,
) -> DemoResult:
    """Run the demo into ``out_dir`` and return what it measured (see the module docstring)."""
    from contract.output import check_folder, staged_folder

    out = Path(out_dir)
    target: dict[str, Any] = dict(exist_ok=exist_ok, overwrite=overwrite, names=["report.md", "bench.json"])
    check_folder(out, **target)  # before minutes of work
    with staged_folder(out, **target) as folder:
        stage = folder.staging
        result = _demo_into(stage, quick, iterations, warmup, images, threads, plot, progress)
        folder.register_tree()
    return _rebased(result, stage, out)


def _rebased(result: DemoResult, stage: Path, out: Path) -> DemoResult:
    """``result`` with the paths of the staging folder moved to where they were installed."""

    def move(path: Path) -> Path:
        return out / path.relative_to(stage)

    result.out_dir = out
    result.report_path = move(result.report_path)
    result.artifacts = {k: move(v) for k, v in result.artifacts.items()}
    result.overlays = [move(p) for p in result.overlays]
    result.legend = move(result.legend) if result.legend is not None else None
    return result


def _demo_into(
    out: Path,
    quick: bool,
    iterations: int | None,
    warmup: int | None,
    images: int | None,
    threads: int,
    plot: bool,
    progress: Progress | None,
) -> DemoResult:
    """The demo's steps, written into the staging folder ``out``."""
    import torch

    from export.source import load_source
    from pem.zoo import default_dataset_path, ensure_default_checkpoint
    from runtime.tools.bench import format_table, markdown_table

    say = progress or (lambda message: None)
    start = time.perf_counter()
    variant = "quick" if quick else "default"
    iterations = iterations if iterations is not None else (3 if quick else 20)
    warmup = warmup if warmup is not None else (1 if quick else 3)
    n_images = images if images is not None else (2 if quick else 4)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        say(f"synthetic Cityscapes-format data ({variant})")
        data = default_dataset_path(variant)
        say(f"default model ({variant}; trained once, then cached)")
        # Training the first time takes minutes: show its steps and ETA as `train` does.
        bar_below = getattr(progress, "bar_below", None)
        with bar_below() if bar_below else contextlib.nullcontext(False) as show_bar:
            checkpoint = ensure_default_checkpoint(variant, progress=show_bar)
        source = load_source(checkpoint=checkpoint)
        artifacts, accuracy = _export_and_calibrate(source, data, out, quick, threads, say)
        parity = _parity(source, artifacts, say)
        say(f"benchmarking PyTorch + 3 ONNX artifacts ({warmup} warm-up, {iterations} iterations)")
        bench, notes = _benchmark(source, checkpoint, artifacts, out, (warmup, iterations, threads), plot)
        say("overlays from the runtime")
        overlays, legend, names, predicted = _overlays(Path(data), artifacts, out, n_images, threads)
    finally:
        torch.set_num_threads(before)

    result = DemoResult(
        out_dir=out,
        report_path=out / "report.md",
        artifacts=artifacts,
        accuracy=accuracy,
        parity=parity,
        bench=bench,
        bench_table=format_table(bench),
        overlays=overlays,
        legend=legend,
        notes=notes,
        classes=names,
        predicted_classes=predicted,
    )
    result.seconds = time.perf_counter() - start
    _write_report(result, variant, str(checkpoint), markdown_table(bench))
    return result


def _export_and_calibrate(
    source: Any, data: Any, out: Path, quick: bool, threads: int, say: Callable[[str], None]
) -> tuple[dict[str, Path], Any]:
    """The FP32, FP16 and INT8 artifacts, and the calibration's accuracy report."""
    from calib.calibrate import CalibrationConfig
    from calib.run import run_calibration
    from export.pipeline import ExportOptions, export_artifact

    artifacts: dict[str, Path] = {}
    for precision in ("fp32", "fp16"):
        say(f"exporting {precision.upper()} ONNX")
        result = export_artifact(
            source,
            ExportOptions(out_dir=out / "artifacts" / precision, precision=precision, exist_ok=True),
        )
        artifacts[precision] = result.onnx_path
    say("INT8 calibration and FP32 / FP16 / INT8 accuracy")
    config = CalibrationConfig(data=data, num_images=16 if quick else 200, threads=threads, progress=False)
    outcome = run_calibration(
        source,
        out / "artifacts" / "int8",
        config,
        eval_data=data,
        eval_limit=4 if quick else None,
        progress=None,
        exist_ok=True,
    )
    artifacts["int8"] = outcome.export.onnx_path
    return artifacts, outcome.report


def _parity(source: Any, artifacts: dict[str, Path], say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Each artifact against PyTorch, by the one comparison engine and policy (runtime.tools.compare),
    as check and verify."""
    from export.check import check_artifact

    parity: dict[str, dict[str, Any]] = {}
    for precision, path in artifacts.items():
        say(f"parity {precision.upper()} vs PyTorch")
        check = check_artifact(path, source=source, emulate=False)
        report = check.reports[0]
        parity[precision] = {
            "passed": check.passed,
            "label_agreement": float(report.label_agreement),
            "confident_agreement": float(report.confident_agreement),
            "miou": float(report.miou),
            "failures": list(check.failures),
            "min_agreement": float(report.policy.min_confident_agreement),
            "margins": {c.what: c.margin for c in report.criteria},
        }
    return parity


def _benchmark(
    source: Any,
    checkpoint: Path,
    artifacts: dict[str, Path],
    out: Path,
    runs: tuple[int, int, int],
    plot: bool,
) -> tuple[list[Any], list[str]]:
    """PyTorch and the ONNX artifacts (``runs``: warm-up, iterations, threads); the reports are
    written into ``out``. Returns the rows and the reports' notes."""
    from export.bench_torch import bench_torch
    from runtime.tools.bench import bench_artifact, write_reports

    warmup, iterations, threads = runs
    shape = tuple(source.config.input_size)
    bench = [
        bench_torch(
            checkpoint=checkpoint,
            warmup=warmup,
            iterations=iterations,
            threads=threads,
            name="pytorch (eager)",
        )
    ]
    for precision, path in artifacts.items():
        bench.append(
            bench_artifact(
                path, warmup=warmup, iterations=iterations, threads=threads, name=f"onnx {precision}"
            )
        )
    context = {"shape": f"{shape[0]}x{shape[1]}", "threads": threads, "model": str(checkpoint)}
    _, note = write_reports(bench, out, plot=plot, context=context, exist_ok=True)
    return bench, [note] if note else []


def _overlays(
    data: Path, artifacts: dict[str, Path], out: Path, n_images: int, threads: int
) -> tuple[list[Path], Path, list[str], list[int]]:
    """FP32 and INT8 overlays of ``n_images`` validation images from the runtime, and the legend
    of the classes predicted. Returns the overlays, the legend, the class names and those
    predicted."""
    from runtime.core.postprocess import legend_image
    from runtime.core.segmenter import Segmenter
    from runtime.io.batch_infer import infer_path
    from runtime.io.images import write_image

    inputs = out / "inputs"
    _copy_val_images(data, inputs, n_images)
    overlays: list[Path] = []
    for precision in ("fp32", "int8"):
        with Segmenter.open(artifacts[precision], threads=threads) as seg:
            infer_path(seg, inputs, out / "predictions" / precision, exist_ok=True)
        overlays += sorted((out / "predictions" / precision / "overlay").rglob("*.jpg"))
    legend = out / "legend.png"
    with Segmenter.open(artifacts["fp32"], threads=threads) as seg:
        names = [c.name for c in seg.artifact.classes]
        predicted = _predicted_classes(out / "predictions" / "fp32" / "predictions.json", names)
        write_image(legend, legend_image(names, seg.artifact.palette, only=predicted))
    return overlays, legend, names, predicted


def _predicted_classes(predictions_json: Path, names: list[str]) -> list[int]:
    """Class ids the model predicted on the overlay images (from ``infer``'s predictions.json)."""
    data = json.loads(predictions_json.read_text())
    seen: set[str] = set()
    for record in data["predictions"]:
        seen.update(s["category"] for s in record.get("segments", []))
        seen.update(record.get("class_pixels", {}))
    return [i for i, name in enumerate(names) if name in seen]


def _copy_val_images(data: Path, target: Path, count: int) -> None:
    """The first ``count`` validation images of the synthetic set into the new folder ``target``
    (inside the demo's staging: installed with the rest, beside anything already there)."""
    images = sorted((data / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))[:count]
    target.mkdir(parents=True)
    for path in images:
        shutil.copy2(path, target / path.name.replace("_leftImg8bit", ""))


def _write_report(result: DemoResult, variant: str, checkpoint: str, bench_md: str) -> None:
    from calib.accuracy import report_markdown
    from contract.fs import atomic_write_bytes

    out = result.out_dir
    lines = [
        "# PEM deployment demo",
        "",
        f"Model: default `{variant}` (cityscapes-panoptic-tiny, synthetic set), `{checkpoint}`.",
        f"Wall time: {result.seconds:.0f} s.",
        "",
        "## Artifacts",
        "",
    ]
    lines += [f"- {p.upper()}: `{path.relative_to(out)}`" for p, path in result.artifacts.items()]
    lines += ["", "## Accuracy (FP32 / FP16 / INT8, synthetic val split)", ""]
    if result.accuracy is not None:
        lines.append(report_markdown(result.accuracy, title="Accuracy").split("\n", 2)[2])
    lines += ["## Parity vs PyTorch (generated street scenes; `pem-deploy check`'s policy)", ""]
    lines += [
        "| artifact | label agreement | confident pixels | required | mIoU vs PyTorch | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for precision, entry in result.parity.items():
        verdict = "PASS" if entry["passed"] else "FAIL: " + "; ".join(entry["failures"])
        lines.append(
            f"| {precision} | {entry['label_agreement']:.4%} | {entry['confident_agreement']:.4%} "
            f"| >= {entry['min_agreement']:.1%} | {entry['miou']:.4f} | {verdict} |"
        )
    lines += ["", "## Latency (ms per frame; pre / infer / post from the runtime)", "", bench_md, ""]
    lines += [f"Also `bench.json`, `bench.csv`, `bench.md`{', `bench.png`' if not result.notes else ''}."]
    lines += [f"Note: {n}" for n in result.notes]
    lines += ["", "## Overlays (runtime output of each precision)", ""]
    lines += [
        "Each row: the input image, then what the runtime segmented with each artifact (class colours; "
        "thing instances in shades of their class colour with a white outline).",
        "",
    ]
    if result.legend is not None:
        unused = [n for i, n in enumerate(result.classes) if i not in set(result.predicted_classes)]
        lines += [
            f"Classes predicted on these images ({len(result.predicted_classes)} of {len(result.classes)}): "
            f"![class legend]({result.legend.relative_to(out).as_posix()})",
            "",
        ]
        if unused:
            lines += [
                f"Not predicted here ({len(unused)}; the synthetic set draws 8 Cityscapes classes, the "
                f"model keeps all 19 outputs): {', '.join(unused)}.",
                "",
            ]
    by_precision: dict[str, dict[str, Path]] = {}
    for path in result.overlays:
        precision, *rest = path.relative_to(out / "predictions").parts
        name = Path(*rest[1:]).as_posix().removesuffix(".jpg")  # overlay/<name>.jpg -> <name>
        by_precision.setdefault(precision, {})[name] = path
    precisions = list(by_precision)
    names = sorted({n for paths in by_precision.values() for n in paths})
    lines += ["| input | " + " | ".join(p.upper() for p in precisions) + " |"]
    lines += ["|---" * (len(precisions) + 1) + "|"]
    for name in names:
        cells = [f"![input {name}](inputs/{name})<br>`{name}`"]
        for precision in precisions:
            path = by_precision[precision].get(name)
            rel = path.relative_to(out).as_posix() if path else ""
            cells.append(f"![{precision} {name}]({rel})<br>{precision.upper()}" if path else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    atomic_write_bytes(result.report_path, ("\n".join(lines) + "\n").encode("utf-8"))
