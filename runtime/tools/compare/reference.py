"""Saved reference outputs (``verify --save-reference`` / ``--load-reference``): a ``.npz``, no pickle.

The file holds the images (``images``: (N, H, W, 3) uint8 BGR), every output of the reference
(``output/NAME``: (N, ...)) and a JSON header (``header``: UTF-8 bytes as a uint8 array) with the
format, version, ``meta`` and the image ``names`` / ``decides`` flags. Loading validates it like
the sidecar is validated (schema, types, sizes, depth) before anything uses it: every problem is
one :class:`~runtime.tools.compare.engine.ComparisonError` line naming the file.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contract.output import write_file
from contract.sidecar_records import HEAD_OUTPUTS
from runtime.tools.compare.engine import ComparisonError, Prediction

REFERENCE_FORMAT = "pem-deploy-reference"
REFERENCE_VERSION = 2
MAX_HEADER_BYTES = 1 << 20
MAX_JSON_DEPTH = 8
MAX_TOTAL_BYTES = 8 << 30  # uncompressed; a 1024x2048 raw-head reference of 16 images is ~2 GB
MAX_IMAGES = 10_000
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "model_file": str,
    "head": str,
    "precision": str,
    "num_classes": int,
    "input_size": list,
}


def save_reference(
    prediction: Prediction,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
) -> Path:
    """Write ``prediction`` as a compressed ``.npz`` through :mod:`contract.output` (staged and
    renamed; an existing file only with ``overwrite``, never one of the run's ``inputs``);
    :func:`load_reference` reads it."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"images": np.stack(prediction.images)}
    for name in prediction.outputs[0] if prediction.outputs else []:
        arrays[f"output/{name}"] = np.stack([o[name] for o in prediction.outputs])
    header = {
        "format": REFERENCE_FORMAT,
        "version": REFERENCE_VERSION,
        "meta": prediction.meta,
        "names": prediction.names,
        "decides": prediction.decides,
    }
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_file(path, buffer.getvalue(), overwrite=overwrite, inputs=inputs)


def _depth(value: Any, limit: int, level: int = 1) -> int:
    if level > limit:
        return level
    if isinstance(value, dict):
        return max([level, *(_depth(v, limit, level + 1) for v in value.values())])
    if isinstance(value, list):
        return max([level, *(_depth(v, limit, level + 1) for v in value)])
    return level


def _bracket_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside strings (checked before parsing: no recursion bomb)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _header(path: Path, raw: np.ndarray) -> dict[str, Any]:
    def bad(problem: str) -> ComparisonError:
        return ComparisonError(f"{path}: reference header {problem}")

    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise bad(f"must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    if raw.size > MAX_HEADER_BYTES:
        raise bad(f"is {raw.size} bytes, over {MAX_HEADER_BYTES}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise bad("is not UTF-8 text") from None
    if _bracket_depth(text) > MAX_JSON_DEPTH:
        raise bad(f"nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise bad(f"is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad(f"must be a JSON object, got {type(header).__name__}")
    if _depth(header, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise bad(f"nests deeper than {MAX_JSON_DEPTH} levels")
    if header.get("format") != REFERENCE_FORMAT:
        raise bad(
            f"format is {header.get('format')!r}, not {REFERENCE_FORMAT!r} (not a pem-deploy reference)"
        )
    if header.get("version") != REFERENCE_VERSION:
        raise bad(f"version {header.get('version')!r} is not {REFERENCE_VERSION} (save the reference again)")
    meta = header.get("meta")
    if not isinstance(meta, dict):
        raise bad("lacks the 'meta' object")
    for key, kind in _META_TYPES.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"meta.{key} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    if meta["head"] not in HEAD_OUTPUTS:
        raise bad(f"meta.head {meta['head']!r} is not one of {', '.join(HEAD_OUTPUTS)}")
    size = meta["input_size"]
    if len(size) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536 for v in size
    ):
        raise bad(f"meta.input_size must be [height, width] of positive integers, got {size!r}")
    if not 0 < meta["num_classes"] <= 65536:
        raise bad(f"meta.num_classes {meta['num_classes']} out of range")
    names = header.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad("names must be a non-empty list of strings")
    if len(names) > MAX_IMAGES:
        raise bad(f"lists {len(names)} images, over {MAX_IMAGES}")
    decides = header.get("decides", [True] * len(names))
    if (
        not isinstance(decides, list)
        or len(decides) != len(names)
        or not all(isinstance(d, bool) for d in decides)
    ):
        raise bad(f"decides must be a list of {len(names)} booleans")
    if not any(decides):
        raise bad("no image decides the verdict (all are diagnostics)")
    header["decides"] = decides
    return header


def _expected_shape(
    template: tuple[str, ...], n: int, height: int, width: int, classes: int
) -> list[int | None]:
    sizes = {"B": n, "H": height, "W": width, "H/4": height // 4, "W/4": width // 4, "K+1": classes + 1}
    return [sizes.get(t) for t in template]  # None: free (e.g. Q)


def load_reference(path: str | os.PathLike[str]) -> Prediction:
    """Read and validate a reference saved by :func:`save_reference` (numpy only, no pickle).

    Raises:
        ComparisonError: one line naming the file and the problem.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise ComparisonError(
                f"--load-reference {path}: no such file"
                if not path.exists()
                else f"{path}: not a regular file"
            )
        if path.stat().st_size == 0:
            raise ComparisonError(f"{path}: file is empty, not a reference .npz")
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                magic = f.read(6)
            kind = "a .npy array" if magic == b"\x93NUMPY" else "not a zip archive"
            raise ComparisonError(f"{path}: {kind}, not a reference .npz (save one with --save-reference)")
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(m.file_size for m in members)
            if total > MAX_TOTAL_BYTES:
                raise ComparisonError(f"{path}: unpacks to {total} bytes, over {MAX_TOTAL_BYTES}")
            bad_names = [m.filename for m in members if not m.filename.endswith(".npy")]
            if bad_names:
                raise ComparisonError(f"{path}: holds {bad_names[0]!r}, not a numpy array")
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            for key in ("header", "images"):
                if key not in files:
                    raise ComparisonError(f"{path}: lacks the '{key}' array (not a pem-deploy reference)")
            header = _header(path, data["header"])
            arrays = {k: data[k] for k in files if k != "header"}
    except ComparisonError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise ComparisonError(
            f"{path}: not a readable reference .npz ({type(exc).__name__}: {detail})"
        ) from None
    return _validated(path, header, arrays)


def _validated(path: Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Prediction:
    meta = header["meta"]
    names: list[str] = header["names"]
    n = len(names)
    height, width = meta["input_size"]
    images = arrays.pop("images")
    if images.dtype != np.uint8 or images.shape != (n, height, width, 3):
        raise ComparisonError(
            f"{path}: images must be uint8 ({n}, {height}, {width}, 3) for {n} names at "
            f"{height}x{width}, got {images.dtype} {images.shape}"
        )
    outputs: dict[str, np.ndarray] = {}
    for key, array in arrays.items():
        if not key.startswith("output/") or not key[7:]:
            raise ComparisonError(f"{path}: unexpected array {key!r}")
        if array.dtype.kind not in "biuf":
            raise ComparisonError(f"{path}: {key} has dtype {array.dtype}, not numbers")
        if array.ndim < 1 or array.shape[0] != n or array.ndim > 5:
            raise ComparisonError(
                f"{path}: {key} has shape {array.shape}, expected ({n}, ...) for {n} images"
            )
        outputs[key[7:]] = array
    for name, (dtype, template) in HEAD_OUTPUTS[meta["head"]].items():
        if name not in outputs:
            raise ComparisonError(f"{path}: lacks output '{name}' of a {meta['head']} head")
        array = outputs[name]
        expected = _expected_shape(template, n, height, width, meta["num_classes"])
        if array.ndim != len(expected) or any(
            e is not None and e != s for e, s in zip(expected, array.shape)
        ):
            shown = "(" + ", ".join("Q" if e is None else str(e) for e in expected) + ")"
            raise ComparisonError(f"{path}: output {name} has shape {array.shape}, expected {shown}")
        if np.dtype(dtype).kind != array.dtype.kind and not (
            np.dtype(dtype).kind in "iu" and array.dtype.kind in "iu"
        ):
            raise ComparisonError(f"{path}: output {name} has dtype {array.dtype}, expected {dtype}")
    per_image = [{name: array[i] for name, array in outputs.items()} for i in range(n)]
    return Prediction(dict(meta), list(names), list(header["decides"]), list(images), per_image)
