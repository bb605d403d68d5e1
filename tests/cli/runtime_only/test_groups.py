"""commands/groups.py: option groups flattened for typer, explicit and loud."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from commands import options as opt
from commands.groups import GroupError, declared, option, with_groups


@dataclass(frozen=True)
class Where:
    out: Annotated[str, typer.Option("--out", help="Folder.")]
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Allow others.")] = False


@dataclass(frozen=True)
class How:
    batch: Annotated[int, typer.Option("--batch", help="Frames.")] = 1


@dataclass(frozen=True)
class Declared:
    name: str = option("model", "--name", help="Stem.")
    limit: int | None = declared(opt.int_option(None, "--limit", "At most N.", 1))


@dataclass(frozen=True)
class Clash:
    out: Annotated[str, typer.Option("--output", help="Another out.")] = "x"


@dataclass
class Mutable:
    batch: int = option(1, "--batch", help="Frames.")


@dataclass(frozen=True)
class TyperDefault:
    batch: int = typer.Option(1, "--batch")


def test_the_signature_is_the_groups_fields_in_order() -> None:
    @with_groups
    def command(where: Where, how: How, verbose: bool = typer.Option(False, "--verbose")) -> None:
        """Doc."""

    assert list(inspect.signature(command).parameters) == ["out", "exist_ok", "batch", "verbose"]
    assert command.__name__ == "command" and command.__doc__ == "Doc."


def test_the_command_gets_one_instance_per_group() -> None:
    seen = []

    @with_groups
    def command(where: Where, how: How) -> None:
        seen.append((where, how))

    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["command", "--out", "o", "--batch", "3"])
    assert result.exit_code == 0, result.output
    assert seen == [(Where("o", False), How(3))]


def test_fields_declared_by_option_and_declared_keep_plain_defaults() -> None:
    seen = []

    @with_groups
    def command(declared: Declared) -> None:
        seen.append(declared)

    assert Declared() == Declared("model", None)  # the API's defaults are the options' defaults
    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)
    runner = CliRunner()
    assert runner.invoke(app, ["command", "--limit", "2"]).exit_code == 0
    assert seen == [Declared("model", 2)]
    refused = runner.invoke(app, ["command", "--limit", "0"])
    assert str(refused.exception) == "--limit 0: must be >= 1"  # the callback ran (cli.py prints it)
    assert "Stem." in runner.invoke(app, ["command", "--help"]).output


def test_a_field_name_clash_raises_when_declared() -> None:
    with pytest.raises(GroupError, match="'out'"):

        @with_groups
        def command(where: Where, clash: Clash) -> None:
            pass


def test_a_clash_with_a_plain_parameter_raises() -> None:
    with pytest.raises(GroupError, match="'batch'"):

        @with_groups
        def command(how: How, batch: int = 2) -> None:
            pass


def test_a_typer_default_on_a_field_raises() -> None:
    with pytest.raises(GroupError, match="Annotated"):

        @with_groups
        def command(bad: TyperDefault) -> None:
            pass


def test_a_group_that_is_not_frozen_raises() -> None:
    with pytest.raises(GroupError, match="frozen"):

        @with_groups
        def command(bad: Mutable) -> None:
            pass
