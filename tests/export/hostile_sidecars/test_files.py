"""Whole-file corruption of a sidecar (the hardened JSON reader) refused with one line; equivalent or
harmless variations accepted, and every exported head round-trips.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
import pytest

from contract.errors import ArtifactError, SidecarError
from contract.sidecar import MAX_DEPTH, MAX_SIDECAR_BYTES, Sidecar
from contract.sidecar_records import FORMAT_VERSION
from export.metadata import onnx_signature
from runtime import Segmenter, load_artifact
from tests.helpers.hostile_artifacts import (
    VARIANTS,
    assert_one_line_message,
    copy_artifact,
    nested_json,
    read_sidecar,
)

pytest.importorskip("onnxruntime")


# -- whole-file corruption: (name, bytes or a function of the original text, message) --------


FILE_CASES: list[tuple[str, Any, str]] = [
    ("empty", b"", "the file is empty"),
    ("whitespace", b"  \n\t ", "the file is empty"),
    ("truncated-10", lambda t: t[:10], "not a valid JSON sidecar"),
    ("truncated-half", lambda t: t[: len(t) // 2], "not a valid JSON sidecar"),
    ("truncated-last", lambda t: t.rstrip()[:-1], "not a valid JSON sidecar"),
    ("binary", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not UTF-8 text"),
    ("utf16", lambda t: t.encode("utf-16"), "not UTF-8 text"),
    ("nul-bytes", b"\x00" * 64, "not a valid JSON sidecar"),
    ("deep-list", nested_json(200_000).encode(), f"JSON nested deeper than {MAX_DEPTH} levels"),
    ("deep-object", ('{"a":' * 50_000 + "1" + "}" * 50_000).encode(), "nested deeper"),
    (
        "deep-in-source",
        lambda t: t.replace('"source": {', '"source": {"x": ' + nested_json(40) + ",", 1),
        "nested",
    ),
    ("oversized", b" " * (MAX_SIDECAR_BYTES + 1), "over the 4194304-byte limit of a sidecar"),
    ("top-list", b"[1, 2, 3]", "not a pem-deploy sidecar (a JSON object is needed, got a list)"),
    ("top-string", b'"pem-deploy"', "not a pem-deploy sidecar"),
    ("top-number", b"42", "not a pem-deploy sidecar"),
    ("top-null", b"null", "not a pem-deploy sidecar"),
    ("top-nan", b"NaN", "not a pem-deploy sidecar"),
    ("object-empty", b"{}", "format is missing: not a pem-deploy sidecar"),
    ("duplicate-key", lambda t: t.replace("{", '{"head": "raw",', 1), "the key 'head' appears twice"),
    ("huge-integer", lambda t: t.replace('"num_classes": 19', '"num_classes": ' + "9" * 5000), "digits"),
    ("trailing-garbage", lambda t: t + "}", "not a valid JSON sidecar (Extra data"),
    ("single-quotes", lambda t: t.replace('"', "'"), "not a valid JSON sidecar"),
    ("comment", lambda t: "// exported\n" + t, "not a valid JSON sidecar"),
]


@pytest.mark.parametrize(("name", "content", "expected"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_corrupt_file_is_one_line_error(artifacts, tmp_path, name, content, expected):
    model = copy_artifact(artifacts["semantic"], tmp_path / "art")
    sidecar = model.with_suffix(".json")
    if callable(content):
        content = content(sidecar.read_text())
    sidecar.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SidecarError) as info:
        load_artifact(model)
    assert_one_line_message(info.value, "model.json:", expected)


def test_a_sidecar_that_is_not_a_regular_file(artifacts, tmp_path):
    model = copy_artifact(artifacts["semantic"], tmp_path / "art")
    model.with_suffix(".json").unlink()
    model.with_suffix(".json").mkdir()
    with pytest.raises(ArtifactError) as info:
        Sidecar.from_file(model.with_suffix(".json"))
    assert_one_line_message(info.value, "model.json: the sidecar is not a regular file")


# -- accepted: equivalent or harmless variations load and run ---------------------------------


def _accept_cases() -> list[tuple[str, str, Any]]:
    def drop(*keys: str):
        def apply(d: dict) -> None:
            for key in keys:
                d.pop(key, None)

        return apply

    def shuffled(d: dict) -> None:
        items = list(d.items())[::-1]
        d.clear()
        d.update(items)

    def std_ints(d: dict) -> None:
        d["input"]["normalization"]["std"] = [58, 57, 57]

    def thresholds_ints(d: dict) -> None:
        d["panoptic"] = {"object_mask_threshold": 0, "overlap_threshold": 1}

    def deep_ok(d: dict) -> None:
        d["source"]["nested"] = json.loads(nested_json(MAX_DEPTH - 3))

    def unicode_names(d: dict) -> None:
        d["classes"][0]["name"] = "straße ☂"

    return [
        ("semantic", "as-exported", None),
        (
            "semantic",
            "optional-provenance-dropped",
            drop("tools", "source", "onnx", "created_utc", "size_bytes"),
        ),
        ("semantic", "no-checksum", drop("sha256")),
        ("semantic", "no-panoptic-section", drop("panoptic", "num_queries")),
        ("semantic", "keys-reordered", shuffled),
        ("semantic", "integer-std", std_ints),
        ("semantic", "unicode-class-name", unicode_names),
        ("semantic", "nesting-within-limit", deep_ok),
        ("panoptic", "as-exported", None),
        ("panoptic", "integer-thresholds", thresholds_ints),
        ("raw", "as-exported", None),
        ("semantic-dynamic-uint8", "as-exported", None),
        ("panoptic-dynamic", "as-exported", None),
        ("raw-normalize-batch2", "as-exported", None),
    ]


@pytest.mark.parametrize(
    ("variant", "name", "change"), _accept_cases(), ids=[f"{c[0]}:{c[1]}" for c in _accept_cases()]
)
def test_accepted_variations_load_and_run(artifacts, tmp_path, variant, name, change):
    model = copy_artifact(artifacts[variant], tmp_path / "art")
    if change is not None:
        data = read_sidecar(model)
        change(data)
        model.with_suffix(".json").write_text(json.dumps(data, indent=1))
    with Segmenter.open(model) as seg:
        result = seg.predict(np.full((40, 70, 3), 200, np.uint8))
    assert result.labels.shape == (40, 70)
    if variant.startswith("panoptic"):
        assert [(s.category_id, s.area) for s in result.segments] == [(0, 40 * 70)]  # original pixels
        assert (result.labels == 0).all()


def test_a_utf8_bom_is_accepted(artifacts, tmp_path):
    model = copy_artifact(artifacts["semantic"], tmp_path / "art")
    sidecar = model.with_suffix(".json")
    sidecar.write_bytes(b"\xef\xbb\xbf" + sidecar.read_bytes())
    assert load_artifact(model).num_classes == 19


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip_of_every_exported_head(artifacts, variant):
    text = artifacts[variant].with_suffix(".json").read_text()
    spec = Sidecar.from_json(text, source="model.json")
    assert spec.format_version == FORMAT_VERSION
    assert spec.to_dict() == json.loads(text)  # nothing lost, nothing added
    assert spec.to_json() == text  # export writes exactly to_json
    assert Sidecar.from_json(spec.to_json()) == spec
    assert Sidecar.from_json(json.loads(text)) == spec
    spec.check_against(onnx_signature(onnx.load(str(artifacts[variant])), "model.onnx"), "model.json")
