"""Running ``pem-deploy`` in-process and asserting its one-line errors (torch-free)."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from cli import app

RUNNER = CliRunner()


def invoke(args: list[Any]) -> Any:
    """``pem-deploy ARGS`` through :data:`cli.app`; the arguments may be paths or numbers."""
    return RUNNER.invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Any, *needles: str) -> str:
    """Exit 2, one ``error:`` line containing every needle, no traceback; returns the line."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
