"""Damaged artifacts through the CLI: exit 2, one ``error:`` line, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from contract.errors import ArtifactError, PemDeployError, SidecarError
from tests.helpers.hostile_artifacts import (
    copy_artifact,
    mutated_sidecar,
    nested_json,
    read_sidecar,
    rehash_sidecar,
    with_model,
)

pytest.importorskip("onnxruntime")


# -- through the CLI: exit 2, one 'error:' line, no traceback -------------------------------


def _std_zero(model: Path) -> None:
    data = read_sidecar(model)
    data["input"]["normalization"]["std"][1] = 0
    model.with_suffix(".json").write_text(json.dumps(data))


def _version_9(model: Path) -> None:
    data = read_sidecar(model)
    data["format_version"] = 9
    model.with_suffix(".json").write_text(json.dumps(data))


def _deep(model: Path) -> None:
    model.with_suffix(".json").write_text(nested_json(100_000))


def _size_mismatch(model: Path) -> None:
    with_model(model, mutated_sidecar(input__shape=[1, 3, 32, 64], outputs__0__shape=[1, 32, 64]))


def _garbage_model(model: Path) -> None:
    model.write_bytes(b"\x08\x01garbage")
    rehash_sidecar(model)


CLI_CASES = [
    ("check", _std_zero, "input.normalization.std[1] must be > 0, got 0"),
    ("infer", _std_zero, "input.normalization.std[1] must be > 0, got 0"),
    ("check", _version_9, "format_version 9 is not supported"),
    ("infer", _version_9, "format_version 9 is not supported"),
    ("check", _deep, "nested deeper than"),
    ("infer", _deep, "nested deeper than"),
    ("check", _size_mismatch, "input.shape[2] is 64 but model.onnx's 'images' has 32"),
    ("infer", _size_mismatch, "input.shape[2] is 64 but model.onnx's 'images' has 32"),
    ("check", _garbage_model, "onnxruntime cannot load"),
    ("infer", _garbage_model, "onnxruntime cannot load"),
]


@pytest.mark.parametrize(
    ("command", "damage", "expected"), CLI_CASES, ids=lambda v: getattr(v, "__name__", v)
)
def test_cli_reports_one_error_line(artifacts, tmp_path, command, damage, expected):
    import cv2

    model = copy_artifact(artifacts["semantic"], tmp_path / "art")
    damage(model)
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    args = (
        ["check", str(model)]
        if command == "check"
        else ["infer", str(model), str(image), "--out", str(tmp_path / "o")]
    )
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
    assert isinstance(result.exception, SystemExit)


def test_every_error_is_a_pem_deploy_error():
    assert issubclass(SidecarError, ArtifactError) and issubclass(ArtifactError, PemDeployError)
    from runtime.errors import ArtifactError as RuntimeArtifactError

    assert RuntimeArtifactError is ArtifactError
