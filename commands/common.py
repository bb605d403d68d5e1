"""What every command module shares: the one-line failure for argument problems found late."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """Print ``error: message`` and exit with status 2 (for problems the option checks cannot see)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)
