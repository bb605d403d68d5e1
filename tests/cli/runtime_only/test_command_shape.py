"""The commands' shape (issue 26): each parses, calls one function of the packages and prints.

Checked on the source (AST), so a command that grows logic again fails here: short functions, one
naming rule, and no ``except`` blocks that repeat what ``cli.py``'s handler does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from commands import _commands

COMMANDS = Path(__file__).resolve().parents[3] / "commands"
MODULES = sorted(COMMANDS.glob("*.py"))
# The whole function, ``def`` to its last line (parameter list included: long option lists go into
# option groups, commands/groups.py), stays within MAX_LINES, its statements within MAX_STATEMENT_LINES.
MAX_LINES = 40
MAX_STATEMENT_LINES = 28


def _functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]


def _statements(function: ast.FunctionDef) -> list[ast.stmt]:
    body = function.body
    first = body[0]
    is_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    return body[1:] if is_docstring and isinstance(first.value.value, str) and len(body) > 1 else body


def _too_long(path: Path) -> list[str]:
    """The functions of ``path`` over MAX_LINES (``def`` to end) or MAX_STATEMENT_LINES."""
    too_long = []
    for function in _functions(path):
        end = function.end_lineno or function.lineno
        lines = end - function.lineno + 1
        statement_lines = end - _statements(function)[0].lineno + 1
        if lines > MAX_LINES or statement_lines > MAX_STATEMENT_LINES:
            too_long.append(
                f"{path.name}:{function.lineno} {function.name}: {lines} / {statement_lines} lines"
            )
    return too_long


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_command_functions_are_short(path: Path) -> None:
    too_long = _too_long(path)
    assert not too_long, too_long


def test_the_counter_counts_the_parameter_list(tmp_path: Path) -> None:
    path = tmp_path / "long_signature.py"
    parameters = "".join(f"    p{i}: int = {i},\n" for i in range(MAX_LINES - 3))
    path.write_text(f'def f(\n{parameters}) -> None:\n    """Doc."""\n', encoding="utf-8")
    assert not _too_long(path)  # MAX_LINES exactly
    path.write_text(
        f'def f(\n{parameters}    extra: int = 0,\n) -> None:\n    """Doc."""\n', encoding="utf-8"
    )
    assert _too_long(path)


def test_the_counter_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_STATEMENT_LINES + 1))
    path = tmp_path / "long.py"
    path.write_text(f'def f(a: int = 1) -> None:\n    """Doc."""\n{body}\n', encoding="utf-8")
    (function,) = _functions(path)
    end = function.end_lineno or 0
    assert end - _statements(function)[0].lineno + 1 == MAX_STATEMENT_LINES + 1


def test_every_command_function_is_named_after_its_command() -> None:
    for name, function in _commands().items():
        assert function.__name__ == f"{name.replace('-', '_')}_command", name
        assert function.__module__.startswith("commands."), name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_commands_leave_typed_errors_to_the_cli_handler(path: Path) -> None:
    """cli.py prints ``error: <one line>`` and exits with the error's code for every
    PemDeployError; only commands/common.py turns plain ``FileNotFoundError`` messages into one."""
    if path.name == "common.py":
        return
    handlers = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ExceptHandler)
    ]
    assert not handlers, f"{path.name}: except blocks at lines {handlers}"
