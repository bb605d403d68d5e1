"""``pem-deploy`` command line: parses arguments and delegates to the packages."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

app = typer.Typer(
    name="pem-deploy",
    help="Edge-deployment toolchain for PEM (Prototype-based Efficient MaskFormer).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Edge-deployment toolchain for PEM: model info, training, export, calibration, runtime."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _parse_known_errors() -> tuple[type[BaseException], ...]:
    from pem.checkpoint import CheckpointError
    from pem.config import ConfigError

    return (ConfigError, CheckpointError, FileNotFoundError)


@app.command()
def info(
    preset: str = typer.Option(None, "--preset", help="Preset name (see --list)."),
    checkpoint: str = typer.Option(
        None, "--checkpoint", help="Our .safetensors checkpoint (config read beside it)."
    ),
    height: int = typer.Option(
        None, "--height", help="Input height (multiple of 32); default: the preset's."
    ),
    width: int = typer.Option(None, "--width", help="Input width (multiple of 32); default: the preset's."),
    postprocess: bool = typer.Option(
        False, "--postprocess/--no-postprocess", help="Also count semantic inference (class x mask product)."
    ),
    list_presets: bool = typer.Option(False, "--list", help="List preset names and exit."),
    paper: bool = typer.Option(
        False, "--paper", help="Compare every paper row (params, GFLOPs) as markdown."
    ),
) -> None:
    """Print parameters and GFLOPs (PyTorch's FLOP counter; fvcore/paper convention: 1 MAC = 1 FLOP)."""
    from pem.config import get_preset, preset_names
    from pem.flops import count_cost

    if list_presets:
        typer.echo("\n".join(preset_names()))
        return
    if paper:
        from pem.paper import compare_with_paper, comparison_markdown

        typer.echo(comparison_markdown(compare_with_paper()))
        return
    try:
        if (preset is None) == (checkpoint is None):
            _fail("give exactly one of --preset or --checkpoint")
        if checkpoint is not None:
            from pem.checkpoint import read_checkpoint_config

            config = read_checkpoint_config(checkpoint)
        else:
            config = get_preset(preset)
        h = height or config.input_size[0]
        w = width or config.input_size[1]
        config = config.replace(input_size=(h, w))
        cost = count_cost(config, with_postprocess=postprocess)
    except _parse_known_errors() as exc:
        _fail(str(exc))
    typer.echo(f"model        {config.name} ({config.task}, {config.num_classes} classes)")
    typer.echo(f"input        {h}x{w}")
    typer.echo(f"parameters   {cost.params / 1e6:.2f} M")
    for part, macs in cost.macs_by_part.items():
        typer.echo(f"  {part:<20} {macs / 1e9:8.2f} GFLOPs")
    typer.echo(f"GFLOPs       {cost.gflops_fvcore:.2f}  (multiply-accumulates, fvcore/paper convention)")


@app.command()
def infer(
    artifact: str = typer.Argument(
        ..., help="Model artifact: .onnx / .engine (sidecar .json beside it) or its folder."
    ),
    source: str = typer.Argument(..., help="An image, a folder of images, or a video."),
    out: str = typer.Option(
        ..., "--out", help="Output folder (labels/, panoptic/, overlay/, predictions.json)."
    ),
    resize: str = typer.Option("stretch", "--resize", help="stretch | letterbox (keep aspect ratio)."),
    provider: list[str] = typer.Option(
        None, "--provider", help="onnxruntime execution provider(s), in order."
    ),
    overlays: bool = typer.Option(True, "--overlay/--no-overlay", help="Write overlay JPEGs."),
    alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity."),
) -> None:
    """Segment images or a video with an exported model (torch-free runtime)."""
    from runtime import RuntimeToolError, Segmenter
    from runtime.batch_infer import infer_path, stderr_progress

    if resize not in ("stretch", "letterbox"):
        _fail(f"--resize must be 'stretch' or 'letterbox', got {resize!r}")
    try:
        with Segmenter.open(artifact, providers=provider or None, resize=resize) as segmenter:  # type: ignore[arg-type]
            summary = infer_path(
                segmenter, source, out, overlays=overlays, alpha=alpha, progress=stderr_progress
            )
    except (RuntimeToolError, OSError) as exc:
        _fail(str(exc))
    t = summary.mean_timings_ms
    typer.echo(
        f"{summary.frames} frame(s) -> {summary.out_dir}  "
        f"(mean ms: pre {t['pre']:.1f}, infer {t['infer']:.1f}, post {t['post']:.1f})"
    )


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
