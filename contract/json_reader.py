"""The hardened JSON reader under the sidecar schema (:mod:`contract.sidecar`).

Hostile files are refused before they cost anything: files over :data:`MAX_SIDECAR_BYTES` are not
read whole, JSON nested deeper than :data:`MAX_DEPTH` is refused before parsing (no
``RecursionError``), duplicate keys and non-JSON values are errors. :class:`Reader` holds the typed
accessors the schema validates fields with; every error is a :class:`~contract.errors.SidecarError`
naming the file and the field.

Only the standard library.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contract.errors import ArtifactError, SidecarError

# Resource bounds (a real sidecar is ~10-40 KB, nesting depth ~6).
MAX_SIDECAR_BYTES = 4 << 20
MAX_DEPTH = 32
MAX_DIM = (1 << 31) - 1  # any output dimension
MAX_NAME = 256

_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_./+*-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LIMIT = f"{MAX_SIDECAR_BYTES}-byte limit of a sidecar"
_BRACKET = re.compile(r"[\[\]{}]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)

Dim = int | str  # a static size or a symbol ("batch", "height/4")


def show(value: Any) -> str:
    """A short one-line description of a JSON value for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}" if len(value) > 8 else json.dumps(value)[:80]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return names.get(type(value), type(value).__name__)


class Reader:
    """Typed accessors that raise :class:`SidecarError` naming ``source`` and the field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str | None, problem: str) -> SidecarError:
        return SidecarError(self.source, where, problem)

    def obj(
        self, value: Any, where: str, keys: Sequence[str], required: Sequence[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be an object, got {type_name(value)}")
        for key in value:
            if key not in keys:
                raise self.fail(f"{where}.{key}" if where else key, "is not a known field")
        for key in required:
            if key not in value:
                raise self.fail(f"{where}.{key}" if where else key, "is missing")
        return value

    def string(
        self, value: Any, where: str, choices: Sequence[str] | None = None, max_len: int = MAX_NAME
    ) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, got {type_name(value)} {show(value)}")
        if choices is not None:
            if value not in choices:
                raise self.fail(where, f"must be one of {', '.join(choices)}, got {show(value)}")
            return value
        if not value.strip():
            raise self.fail(where, "must be a non-empty string")
        if len(value) > max_len:
            raise self.fail(where, f"must be at most {max_len} characters, got {len(value)}")
        if max_len <= MAX_NAME and _CONTROL.search(value):
            raise self.fail(where, f"must not contain control characters, got {show(value)}")
        return value

    def integer(self, value: Any, where: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"must be an integer, got {type_name(value)} {show(value)}")
        if value < lo:
            raise self.fail(where, f"must be >= {lo}, got {show(value)}")
        if value > hi:
            raise self.fail(where, f"must be <= {hi}, got {show(value)}")
        return value

    def number(self, value: Any, where: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"must be a number, got {type_name(value)} {show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise self.fail(where, f"must be finite, got {show(value)}")
        if not lo <= value <= hi:
            raise self.fail(where, f"must be in [{lo:g}, {hi:g}], got {value:g}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, got {type_name(value)} {show(value)}")
        return value

    def array(self, value: Any, where: str, lo: int, hi: int) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list, got {type_name(value)}")
        if not lo <= len(value) <= hi:
            size = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise self.fail(where, f"must have {size} entries, got {len(value)}")
        return value

    def dim(self, value: Any, where: str, hi: int = MAX_DIM) -> Dim:
        if isinstance(value, str):
            if not _SYMBOL.fullmatch(value):
                raise self.fail(where, f"must be a size or a symbol like 'batch', got {show(value)}")
            return value
        return self.integer(value, where, 1, hi)

    def section(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be an object, got {type_name(value)}")
        return value


def check_tree(data: Any, source: str) -> None:
    """Iteratively check that ``data`` is plain JSON (dict/list/str/int/float/bool/None) and not
    nested deeper than :data:`MAX_DEPTH` (no recursion, so no ``RecursionError``)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SidecarError(source, None, f"JSON nested deeper than {MAX_DEPTH} levels (not a sidecar)")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SidecarError(source, None, f"a non-string key {show(key)} (not JSON)")
                stack.append((item, depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value)
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise SidecarError(source, None, f"a {type(value).__name__} value (not JSON)")


def _nesting_depth(text: str) -> int:
    """Deepest ``[`` / ``{`` nesting of JSON text, strings ignored (linear time, no recursion)."""
    stripped = _STRING.sub('""', text)
    depth = deepest = 0
    for match in _BRACKET.finditer(stripped):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def parse_json_text(text: str | bytes, source: str) -> Any:
    """Parse sidecar JSON text with the size, depth and duplicate-key guards; errors name ``source``."""
    if isinstance(text, bytes):
        if len(text) > MAX_SIDECAR_BYTES:
            raise SidecarError(source, None, f"{len(text)} bytes, over the {_LIMIT}")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SidecarError(
                source, None, "not a valid JSON sidecar (not UTF-8 text: a binary file?)"
            ) from None
    if len(text) > MAX_SIDECAR_BYTES:
        raise SidecarError(source, None, f"{len(text)} characters, over the {_LIMIT}")
    if not text.strip():
        raise SidecarError(source, None, "the file is empty (not a valid JSON sidecar)")
    if _nesting_depth(text) > MAX_DEPTH:
        raise SidecarError(source, None, f"JSON nested deeper than {MAX_DEPTH} levels (not a sidecar)")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        key = show(exc.args[0])
        raise SidecarError(source, None, f"the key {key} appears twice in one object") from None
    except json.JSONDecodeError as exc:
        raise SidecarError(
            source, None, f"not a valid JSON sidecar ({exc.msg}: line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer over Python's 4300-digit limit
        reason = str(exc).split(";")[0] if str(exc) else type(exc).__name__
        raise SidecarError(source, None, f"not a valid JSON sidecar ({reason})") from None


def read_sidecar_text(path: str | os.PathLike[str]) -> str:
    """The text of a sidecar file, refused from its size before it is read whole."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such sidecar file") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the sidecar ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ArtifactError(f"{path}: the sidecar is not a regular file")
    if info.st_size > MAX_SIDECAR_BYTES:
        raise SidecarError(
            str(path), None, f"{info.st_size} bytes, over the {MAX_SIDECAR_BYTES}-byte limit of a sidecar"
        )
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the sidecar ({exc.strerror or exc})") from None
    if len(data) > MAX_SIDECAR_BYTES:  # grew after stat
        raise SidecarError(str(path), None, f"over the {MAX_SIDECAR_BYTES}-byte limit of a sidecar")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SidecarError(
            str(path), None, "not a valid JSON sidecar (not UTF-8 text: a binary file?)"
        ) from None
