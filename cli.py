"""``pem-deploy`` command line: parses arguments and delegates to the packages."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from commands import register
from commands.common import missing_dependency_message
from contract.errors import PemDeployError, describe_os_error, one_line

# click's usage errors (bad option value, unknown option): typer.BadParameter's UsageError base,
# whether typer vendors click (recent versions) or uses click itself.
_USAGE_ERRORS: tuple[type[Exception], ...] = tuple(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


def _metavar(param: Any) -> str:
    """Capitalised placeholder for a value in help and usage lines (N for integers, X for numbers)."""
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    if annotation is int:
        return "N"
    if annotation is float:
        return "X"
    return (param.name or "value").upper()


def _tidy_param(param: Any) -> None:
    no_type = lambda ctx: None  # noqa: E731
    if getattr(param, "param_type_name", "") == "argument":
        param.metavar = param.metavar or (param.name or "value").upper()
        param.display_type_rich = no_type  # type: ignore[attr-defined]  # the name column says it
    elif getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.display_type_rich = no_type  # type: ignore[attr-defined]  # flags take no value
    elif param.metavar is None:
        param.metavar = _metavar(param)


def _tidy_help(command: Any) -> None:
    """Help without type tags (``<str>``, ``<bool>``): flags show no value, values a CAPITAL name."""
    for param in command.params:
        _tidy_param(param)
    make_help_option = command.get_help_option

    def get_help_option(ctx: typer.Context) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            _tidy_param(option)
        return option

    command.get_help_option = get_help_option  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


class _OneLineErrors(TyperGroup):
    """Turns every expected failure into ``error: <one line>`` and exit status 2, never a traceback.

    Typed project errors (:class:`PemDeployError`), file-system failures (disk full, read-only
    folder, permission) and running out of memory are all a user's problem to fix, not a bug
    report; Ctrl-C exits 130 with one line. Also tidies the help of every command.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        _tidy_help(self)

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except _USAGE_ERRORS as exc:  # bad option value / unknown option: one line, not a usage box
            typer.echo(f"error: {one_line(exc.format_message())}", err=True)
            raise typer.Exit(code=2) from None
        except PemDeployError as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(code=exc.exit_code) from None
        except ImportError as exc:  # an optional package missing (torch in the runtime-only install)
            message = missing_dependency_message(ctx.invoked_subcommand, exc)
            if message is None:
                raise
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(code=2) from None
        except OSError as exc:
            typer.echo(f"error: {describe_os_error(exc)}", err=True)
            raise typer.Exit(code=2) from None
        except MemoryError:
            typer.echo("error: out of memory (try a smaller size, batch or --threads)", err=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(code=130) from None


app = typer.Typer(
    cls=_OneLineErrors,
    name="pem-deploy",
    help="Edge-deployment toolchain for PEM (Prototype-based Efficient MaskFormer).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich's option table cuts an option's aliases ("--calib-images,--nu…") at
    # 80 columns; click's list wraps them instead.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"pem-deploy {version('pem-deploy')}")
        except PackageNotFoundError:  # running from a source tree that is not installed
            typer.echo("pem-deploy (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Edge-deployment toolchain for PEM: model info, training, export, calibration, runtime."""


register(app)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
