"""``demo``: the whole toolchain on the embedded default (delegates to ``workflows.demo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from commands import options as opt
from commands.common import prepare_eager_torch

if TYPE_CHECKING:
    from workflows.demo import DemoResult


def demo_command(
    out: str = opt.folder_option("pem-demo", "--out", "Output folder (artifacts, report.md, overlays)."),
    quick: bool = typer.Option(False, "--quick", help="The quick default model and few iterations (tests)."),
    iterations: int = opt.int_option(
        None, "--iterations", "Timed calls per model (default 20; quick 3).", 1, 1_000_000
    ),
    threads: opt.Threads = 1,
    exist_ok: bool = opt.exist_ok_option(
        "Allow an --out folder holding other files (the demo's are added beside them)."
    ),
    overwrite: bool = opt.overwrite_option(
        "Replace files at the demo's names (report.md, inputs/...) that pem-deploy did not write."
    ),
) -> None:
    """Whole toolchain on the embedded default: data, model, FP32/FP16/INT8 ONNX, parity, bench, report."""
    from export.progress import ConsoleProgress
    from workflows.demo import run_demo

    prepare_eager_torch(threads)
    with ConsoleProgress() as progress:
        result = run_demo(
            out,
            quick=quick,
            iterations=iterations,
            threads=threads,
            progress=progress,
            exist_ok=exist_ok,
            overwrite=overwrite,
        )
    _print_demo(result)
    if not result.parity_passed:
        typer.echo("parity FAILED for " + ", ".join(p for p, e in result.parity.items() if not e["passed"]))
        raise typer.Exit(code=1)


def _print_demo(result: DemoResult) -> None:
    """The bench table, each precision's parity and accuracy, the notes and the report's path."""
    typer.echo(result.bench_table)
    for precision, entry in result.parity.items():
        verdict = "PASS" if entry["passed"] else "FAIL"
        typer.echo(
            f"parity {precision:<5} label agreement {entry['label_agreement']:.4%}, confident pixels "
            f"{entry['confident_agreement']:.4%} (>= {entry['min_agreement']:.1%})  {verdict}"
        )
    if result.accuracy is not None:
        for name, entry in result.accuracy["precisions"].items():
            pq = f", PQ {entry['PQ']:.2f}" if "PQ" in entry else ""
            typer.echo(f"accuracy {name:<5} mIoU {entry['mIoU']:.2f} (drop {entry['mIoU_drop']:+.2f}){pq}")
    for note in result.notes:
        typer.echo(note)
    typer.echo(f"report {result.report_path}  ({result.seconds:.0f} s)")
