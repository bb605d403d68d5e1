"""The layout of the per-image, per-output difference tables of the comparison engine (check, verify).

Both print, under a title, one line per sample and output (the sample's name, the output's name, then
right-aligned figures) and one ``labels`` line per sample; sharing the layout keeps their columns alike.
"""

from __future__ import annotations

from collections.abc import Iterable

OUTPUT_WIDTH = 14


def name_width(names: Iterable[str], minimum: int) -> int:
    """Width of the first column: the longest name plus a two-space gap, at least ``minimum``.

    Image paths can be long: a fixed width would run the name into the next column.
    """
    return max([minimum, *(len(name) + 2 for name in names)])


def row(name: str, output: str, width: int, cells: str) -> str:
    """One indented line: ``name`` padded to ``width``, ``output`` to :data:`OUTPUT_WIDTH`, then ``cells``."""
    return f"  {name:<{width}}{output:<{OUTPUT_WIDTH}}{cells}"
