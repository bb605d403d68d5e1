"""Running ``pem-deploy`` in-process and asserting its one-line errors (torch-free)."""

from __future__ import annotations

import re
from typing import Any

from typer.testing import CliRunner

from cli import app

RUNNER = CliRunner()
# contract.progress.heartbeat's line off a terminal: ``LABEL: N s``.
HEARTBEAT = re.compile(r"(?!error: )[^\n]+: \d+ s")


def invoke(args: list[Any]) -> Any:
    """``pem-deploy ARGS`` through :data:`cli.app`; the arguments may be paths or numbers."""
    return RUNNER.invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Any, *needles: str) -> str:
    """Exit 2, one ``error:`` line containing every needle, no traceback; returns the line."""
    # A slow step prints heartbeat lines ("exporting the model: 5 s", contract.progress) off a
    # terminal before it fails; how many depends on the machine's speed, so they are not counted.
    lines = [line for line in result.output.strip().splitlines() if not HEARTBEAT.fullmatch(line)]
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
