"""The CLI's help reads like a Unix tool's: no type tags, CAPITAL placeholders, --version."""

import re

import pytest
import typer.main
from typer.testing import CliRunner

from cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_type_tags(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert not re.search(r"<(str|bool|int|float|list\[[a-z]+\]|path)>", result.output), result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    for placeholder in re.findall(r"[{\[]([A-Za-z_]+)(?:\.\.\.)?[}\]]", usage.split("[OPTIONS]", 1)[-1]):
        assert placeholder.isupper(), usage


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"pem-deploy \S+\n", result.output)


@pytest.mark.parametrize(
    ("flag", "commands"),
    [
        ("--providers", ["infer", "bench", "verify"]),
        ("--threads", ["infer", "bench", "check", "eval", "train", "calibrate", "demo"]),
        ("--calib-method", ["export", "calibrate"]),
        ("--calib-images", ["export", "calibrate"]),
    ],
)
def test_shared_options_have_one_name_everywhere(flag: str, commands: list[str]) -> None:
    for command in commands:
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert flag in result.output, f"{command} has no {flag}"
