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


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
