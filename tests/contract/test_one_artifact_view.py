"""One view of an artifact: the typed :class:`contract.sidecar.Sidecar` everywhere after it is read
or built (issue 26).

Outside ``contract/`` no code indexes a sidecar as a dict; the locator, the file hash and the
sidecar reader are each defined once; every name list of the vocabulary (precisions, heads,
tasks, preprocess modes, deform impls, INT8 targets) is written once, in ``contract/``. The scans
read the source (no imports), so they run without torch.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The packages that read or write artifacts (contract/ itself is where sidecar dicts are parsed).
USERS = ("runtime", "export", "calib", "workflows", "commands")
PACKAGES = ("contract", "pem", *USERS)
SIDECAR_KEYS = (
    "format|format_version|model_file|task|head|precision|input|outputs|num_classes|num_queries|"
    "classes|panoptic|onnx|fp16|tensorrt_lint|int8|tools|source|sha256|size_bytes|created_utc|"
    "tensorrt|consumer"
)
# sidecar["head"], artifact.sidecar.get("input"), sc["outputs"], data["consumer"], spec.to_dict()[...]
SIDECAR_INDEXING = re.compile(
    r"\b\w*sidecar\w*\s*(\[|\.get\()"
    rf"|\b(sc|data|inp|src|spec_dict)\[[\"']({SIDECAR_KEYS})[\"']\]"
    r"|\.to_dict\(\)\["
)


def _sources(packages: tuple[str, ...]) -> list[Path]:
    files = [path for package in packages for path in sorted((ROOT / package).rglob("*.py"))]
    return files + ([ROOT / "cli.py"] if (ROOT / "cli.py").is_file() else [])


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _functions(name: str) -> list[str]:
    found = []
    for path in _sources(PACKAGES):
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_sidecar_is_indexed_as_a_dict_outside_contract() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources(USERS)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SIDECAR_INDEXING.search(line)
    ]
    assert not hits, "use the typed Sidecar (contract/sidecar.py) instead:\n" + "\n".join(hits)


def test_the_indexing_pattern_catches_the_dict_forms() -> None:
    caught = [
        'trt_info = self.sidecar["tensorrt"]',
        'inp = artifact.sidecar.get("input", {})',
        "f\"{sc['onnx']['nodes']} nodes\"",
        'data["consumer"] = {"profile": profile}',
        'spec.to_dict()["int8"]',
    ]
    assert all(SIDECAR_INDEXING.search(line) for line in caught)
    assert not SIDECAR_INDEXING.search('files["panoptic"] = name')  # not a sidecar


@pytest.mark.parametrize(
    "name, home",
    [
        ("locate", "runtime/core/artifact.py"),
        ("sha256_file", "contract/fs.py"),
        ("read_sidecar", "contract/sidecar.py"),
    ],
)
def test_each_artifact_job_is_defined_once(name: str, home: str) -> None:
    found = _functions(name)
    assert [where.split(":")[0] for where in found] == [home], found


def test_there_is_one_artifact_locator() -> None:
    locators = [f for f in ("locate_artifact", "find_artifact", "locate_model") if _functions(f)]
    assert not locators, f"use runtime.core.artifact.locate: {locators}"


VOCABULARY = [
    ("fp32", "fp16", "int8"),
    ("raw", "semantic", "panoptic"),
    ("semantic", "panoptic"),
    ("none", "normalize", "uint8"),
    ("native", "decomposed"),
    ("tensorrt", "onnxruntime"),
    ("deepstream", "isaac-ros"),
]


def test_each_name_list_is_written_once_in_contract() -> None:
    places: dict[tuple[str, ...], list[str]] = {names: [] for names in VOCABULARY}
    for path in _sources(PACKAGES):
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
            ):
                names = tuple(e.value for e in node.elts)  # type: ignore[attr-defined]
                if names in places:
                    places[names].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    counts = Counter({names: len(found) for names, found in places.items()})
    wrong = {names: places[names] for names, count in counts.items() if count != 1}
    assert not wrong, f"define each once in contract/ and import it: {wrong}"
    assert all(found[0].startswith("contract/") for found in places.values()), places
