"""Option groups: a command's flags as a few frozen dataclasses instead of one long signature.

A group is a frozen dataclass whose fields each declare one option, either with :func:`option`
(``typer.Option``'s arguments, default first) or :func:`declared` (a ``typer.Option`` made by a
factory of commands/options.py), or in ``Annotated`` with the default after ``=`` (the shared
option types of commands/options.py); the field's default is the option's::

    @dataclass(frozen=True)
    class OutputFlags:
        out: str = option(..., "--out", help="Output folder.")
        exist_ok: bool = option(False, "--exist-ok", help="...")
        threads: opt.Threads = 1

    @with_groups
    def export_command(source: SourceFlags, output: OutputFlags, precision: str = ...) -> None: ...

:func:`with_groups` shows typer one flat signature (every group's fields in place of the group
parameter, in declaration order, the plain parameters as they are) and calls the command with one
instance of each group. Field names become the option's destination (and so its metavar), so they
must be unique across the command: a clash raises :class:`GroupError` when the module is imported,
never a silent match. A group is plain data, so a command passes it straight on to the API.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import typer
from typer.models import ParameterInfo

__all__ = ["GroupError", "declared", "option", "with_groups"]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY
_DECLARATION = "typer"  # the key of a field's typer declaration in its metadata


class GroupError(TypeError):
    """A command's option groups cannot be flattened (a name clash, a typer default on a field)."""


def declared(declaration: ParameterInfo) -> Any:
    """A group field declared by ``declaration`` (a ``typer.Option`` with its default; ``...``:
    required): the field's default is the option's, the declaration goes to typer."""
    if declaration.default is ...:
        return dataclasses.field(metadata={_DECLARATION: declaration})
    return dataclasses.field(default=declaration.default, metadata={_DECLARATION: declaration})


def option(default: Any, *flags: str, **settings: Any) -> Any:
    """A group field declared as ``typer.Option(default, *flags, **settings)`` would be."""
    return declared(typer.Option(default, *flags, **settings))


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _group_parameters(owner: str, group: type) -> list[inspect.Parameter]:
    """``group``'s fields as keyword parameters (each with its typer declaration)."""
    if not group.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise GroupError(f"{owner}: option group {group.__name__} must be a frozen dataclass")
    hints = typing.get_type_hints(group, include_extras=True)
    parameters = []
    for field in dataclasses.fields(group):
        if isinstance(field.default, ParameterInfo):
            raise GroupError(
                f"{owner}: {group.__name__}.{field.name}: declare the option with groups.option / "
                "groups.declared or in Annotated[...] (the field's default must be a plain value)"
            )
        default = field.metadata.get(_DECLARATION, field.default)
        if default is dataclasses.MISSING:
            default = inspect.Parameter.empty
        parameters.append(
            inspect.Parameter(field.name, _KEYWORD, default=default, annotation=hints[field.name])
        )
    return parameters


def _flatten(function: Callable[..., Any]) -> tuple[list[inspect.Parameter], dict[str, type]]:
    """The flat parameter list typer sees, and which parameter of ``function`` is which group."""
    hints = typing.get_type_hints(function, include_extras=True)
    owner = f"{function.__module__}.{function.__qualname__}"
    flat: list[inspect.Parameter] = []
    groups: dict[str, type] = {}
    for parameter in inspect.signature(function).parameters.values():
        annotation = hints.get(parameter.name, parameter.annotation)
        if _is_group(annotation):
            groups[parameter.name] = annotation
            flat.extend(_group_parameters(owner, annotation))
        else:
            flat.append(parameter.replace(kind=_KEYWORD, annotation=annotation))
    seen: set[str] = set()
    for parameter in flat:
        if parameter.name in seen:
            raise GroupError(f"{owner}: two options are both named {parameter.name!r}; rename one field")
        seen.add(parameter.name)
    return flat, groups


def with_groups(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with its group parameters flattened for typer (see the module's docstring).

    Raises :class:`GroupError` at decoration time when two options would share a name.
    """
    flat, groups = _flatten(function)
    fields = {name: [f.name for f in dataclasses.fields(group)] for name, group in groups.items()}

    def command(**values: Any) -> Any:
        for name, group in groups.items():
            values[name] = group(**{field: values.pop(field) for field in fields[name]})
        return function(**values)

    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(command, attribute, getattr(function, attribute))
    command.__signature__ = inspect.Signature(flat)  # type: ignore[attr-defined]
    command.__annotations__ = {}  # the signature carries the resolved annotations
    command.__dict__.update(function.__dict__)
    return command
