"""Hostile engine sidecars: every ``tensorrt.*`` field the runtime uses is checked by the sidecar
schema (contract/sidecar.py) when the artifact is loaded, so ``infer``, ``bench`` and ``verify``
print one line naming the field and exit 2 instead of crashing where the field is used (issue 20).

No TensorRT is needed: the sidecar is refused before any backend is imported.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from contract.errors import SidecarError
from contract.fs import sha256_file
from contract.sidecar import Sidecar
from runtime.core.artifact import load_artifact
from tests.helpers.cli import assert_one_line_error, invoke
from tests.helpers.runtime_models import semantic_model, sidecar_for, write_artifact

GOOD_TRT: dict[str, Any] = {
    "version": "10.3.0",
    "gpu_name": "Orin",
    "compute_capability": "8.7",
    "strongly_typed": True,
    "precision": "fp16",
    "pinned_layers": ["/Softmax"],
    "profiles": [
        {"input_name": "images", "min": [1, 3, 32, 64], "opt": [1, 3, 32, 64], "max": [2, 3, 32, 64]}
    ],
    "contexts": 2,
    "source_onnx": "model.onnx",
    "source_sha256": "a" * 64,
}

# (field path inside "tensorrt", value, text the one-line error must contain)
CASES: list[tuple[str, Any, str]] = [
    ("contexts", "2", "tensorrt.contexts must be an integer"),
    ("contexts", "many", "tensorrt.contexts must be an integer"),
    ("contexts", -1, "tensorrt.contexts must be >= 1"),
    ("contexts", 0, "tensorrt.contexts must be >= 1"),
    ("contexts", [2], "tensorrt.contexts must be an integer"),
    ("contexts", 1.5, "tensorrt.contexts must be an integer"),
    ("contexts", True, "tensorrt.contexts must be an integer"),
    ("contexts", 10**30, "tensorrt.contexts must be <= 64"),
    ("contexts", {"n": 2}, "tensorrt.contexts must be an integer"),
    ("profiles", "min", "tensorrt.profiles must be a list"),
    ("profiles", {"input_name": "images"}, "tensorrt.profiles must be a list"),
    ("profiles", [1], "tensorrt.profiles[0] must be an object"),
    ("profiles", [{"input_name": "images", "min": [1, 3, 32, 64]}], "tensorrt.profiles[0].opt is missing"),
    (
        "profiles",
        [{"input_name": "images", "min": [2, 3, 32, 64], "opt": [1, 3, 32, 64], "max": [1, 3, 32, 64]}],
        "min <= opt <= max",
    ),
    (
        "profiles",
        [{"input_name": "images", "min": [1, 3, 32], "opt": [1, 3, 32, 64], "max": [1, 3, 32, 64]}],
        "same number of dimensions",
    ),
    (
        "profiles",
        [{"input_name": "images", "min": [1, 3, "h", 64], "opt": [1, 3, 32, 64], "max": [1, 3, 32, 64]}],
        "tensorrt.profiles[0].min[2] must be an integer",
    ),
    (
        "profiles",
        [{"input_name": "images", "min": [0, 3, 32, 64], "opt": [1, 3, 32, 64], "max": [1, 3, 32, 64]}],
        "tensorrt.profiles[0].min[0] must be >= 1",
    ),
    (
        "profiles",
        [{"input_name": 7, "min": [1, 3, 32, 64], "opt": [1, 3, 32, 64], "max": [1, 3, 32, 64]}],
        "tensorrt.profiles[0].input_name must be a string",
    ),
    (
        "profiles",
        [{"input_name": "images", "min": [1], "opt": [1], "max": [1], "extra": 1}],
        "tensorrt.profiles[0].extra is not a known field",
    ),
    ("version", 10, "tensorrt.version must be a string"),
    ("version", "", "tensorrt.version must be a non-empty string"),
    ("version", "ten", "tensorrt.version must be a version like 10.3.0"),
    ("version", ["10", "3"], "tensorrt.version must be a string"),
    ("compute_capability", 8.7, "tensorrt.compute_capability must be a string"),
    ("compute_capability", "sm_87", "tensorrt.compute_capability must look like 8.7"),
    ("gpu_name", {"name": "Orin"}, "tensorrt.gpu_name must be a string"),
    ("strongly_typed", "yes", "tensorrt.strongly_typed must be true or false"),
    ("precision", "bf16", "tensorrt.precision must be one of fp32, fp16, int8"),
    ("pinned_layers", "/Softmax", "tensorrt.pinned_layers must be a list"),
    ("pinned_layers", [3], "tensorrt.pinned_layers[0] must be a string"),
    ("source_sha256", "xyz", "tensorrt.source_sha256 must be 64 hex digits"),
    ("dla", [0], "tensorrt.dla must be an object"),
    ("dla", {"core": -1}, "tensorrt.dla.core must be >= 0"),
    ("dla", {"core": 0, "gpu_fallback": "yes"}, "tensorrt.dla.gpu_fallback must be true or false"),
]


def _engine(folder: Path, trt: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.fp16.engine"
    path.write_bytes(b"ENGINE")
    sidecar = {
        **sidecar_for(semantic_model(32, 64), precision="fp16"),
        "model_file": path.name,
        "sha256": sha256_file(path),
        "tensorrt": trt,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def _mutated(key: str, value: Any) -> dict[str, Any]:
    trt = copy.deepcopy(GOOD_TRT)
    trt[key] = value
    return trt


def test_a_complete_engine_section_is_accepted(tmp_path):
    spec = load_artifact(_engine(tmp_path, GOOD_TRT)).spec
    assert spec is not None and spec.provenance.tensorrt == GOOD_TRT
    # Older and DLA builds: no profiles / contexts (static shapes), a dla section, unknown keys kept.
    extra = {**GOOD_TRT, "contexts": None, "profiles": [], "dla": {"core": 1, "gpu_fallback": True}}
    extra["builder_note"] = "recorded by a newer builder"
    assert load_artifact(_engine(tmp_path / "dla", extra)).spec.provenance.tensorrt == extra


@pytest.mark.parametrize(
    ("key", "value", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_engine_field_is_one_line_at_load(tmp_path, key, value, expected):
    path = _engine(tmp_path, _mutated(key, value))
    with pytest.raises(SidecarError) as info:
        load_artifact(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path.with_suffix(".json"))), message
    assert expected in message, message


def test_the_schema_refuses_what_build_would_write_wrong():
    """Export / build go through the same schema: a bad section cannot be written either."""
    data = {**sidecar_for(semantic_model(32, 64)), "tensorrt": _mutated("contexts", -3)}
    with pytest.raises(SidecarError, match=r"tensorrt\.contexts must be >= 1"):
        Sidecar.from_dict(data, "built.json")


# The three commands that crashed on these fields (issue 20): one line and exit 2 each.
COMMAND_CASES = [("contexts", "2"), ("contexts", -4), ("contexts", [1, 2]), ("profiles", "x")]


@pytest.mark.parametrize("command", ["infer", "bench", "verify"])
@pytest.mark.parametrize(("key", "value"), COMMAND_CASES, ids=[f"{k}={v!r}" for k, v in COMMAND_CASES])
def test_commands_refuse_the_engine_in_one_line(tmp_path, command, key, value):
    engine = _engine(tmp_path / "engine", _mutated(key, value))
    (tmp_path / "ref").mkdir()
    reference = write_artifact(tmp_path / "ref", semantic_model(32, 64))
    image = tmp_path / "in.png"
    image.write_bytes(b"")  # never read: the artifact is refused first
    args = {
        "infer": ["infer", engine, image, "--out", tmp_path / "out"],
        "bench": ["bench", engine, "--iterations", "1", "--warmup", "0"],
        "verify": ["verify", engine, "--against", reference],
    }[command]
    result = invoke(args)
    assert_one_line_error(result, f"tensorrt.{key}")
    assert not (tmp_path / "out").exists()
