"""Hostile numbers and inputs of ``train``, ``eval`` and ``check`` (issue 20).

Each case asserts its exact outcome through ``cli.app``: exit 2, one ``error:`` line naming the
problem, no traceback, nothing written where nothing should be.

- ``train --lr 1e30``: the loss becomes NaN / Inf; a typed one-line error names the step and
  suggests a lower ``--lr`` (it was a FloatingPointError traceback).
- ``train --batch-size`` / ``--crop`` too large for this machine: refused before anything is
  built, from the same estimate export and bench use (it grew past 4.8 GB before).
- ``eval --task panoptic`` on a semantic checkpoint: refused (it reported mIoU only, exit 0).
- ``check --image`` with a header bomb: read through the runtime's image reader (it bypassed it).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from contract.resources import OVERRIDE_ENV
from pem.checkpoint import save_checkpoint
from pem.config import get_preset
from pem.data.synthetic import SyntheticConfig, make_synthetic
from pem.model import PEM
from pem.train.trainer import NonFiniteLossError
from tests.helpers.cli import assert_one_line_error, invoke

TINY = "cityscapes-semantic-tiny"
RUNNER = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile_train") / "set"
    return make_synthetic(root, SyntheticConfig(train=4, val=2, size=(64, 128), seed=3))


@pytest.fixture(scope="module")
def semantic_checkpoint(tmp_path_factory) -> Path:
    config = get_preset(TINY)
    torch.manual_seed(0)
    return save_checkpoint(PEM(config).eval(), config, tmp_path_factory.mktemp("ck") / "tiny.safetensors")


def _train(data: Path, out: Path, *extra: Any) -> list[Any]:
    return [
        *("train", "--preset", TINY, "--data", data, "--out", out, "--iterations", "4"),
        *("--batch-size", "2", "--crop", "64x128", "--num-points", "16", "--no-eval", "--threads", "1"),
        *extra,
    ]


@pytest.mark.parametrize("lr", ["1e12", "1e30"])
def test_diverging_learning_rate_is_one_line(data, tmp_path, lr):
    line = assert_one_line_error(
        invoke(_train(data, tmp_path / "run", "--lr", lr)), "training diverged", "lower --lr"
    )
    assert "at step " in line and "the loss is " in line, line
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("lr", ["1e31", "1e300", "inf"])
def test_learning_rate_past_float32_is_refused_up_front(data, tmp_path, lr):
    assert_one_line_error(
        invoke(_train(data, tmp_path / "run", "--lr", lr)), "--lr" if lr == "inf" else "lr: must be"
    )
    assert not (tmp_path / "run").exists()


def test_diverged_loss_is_a_typed_error():
    assert issubclass(NonFiniteLossError, FloatingPointError)  # older callers still catch it
    from contract.errors import PemDeployError

    assert issubclass(NonFiniteLossError, PemDeployError)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--batch-size", "100000"], "100000 crops of 64x128"),
        (["--batch-size", "2", "--crop", "32768x32768"], "crops of 32768x32768"),
        (["--batch-size", "100000", "--crop", "1024x2048"], "100000 crops of 1024x2048"),
    ],
    ids=["batch", "crop", "both"],
)
def test_training_that_cannot_fit_is_refused_before_it_starts(data, tmp_path, monkeypatch, flags, needle):
    monkeypatch.delenv(OVERRIDE_ENV, raising=False)
    args = _train(data, tmp_path / "run")
    for flag, value in zip(flags[::2], flags[1::2]):
        args[args.index(flag) + 1] = value
    line = assert_one_line_error(invoke(args), needle, "of memory (estimate)", OVERRIDE_ENV)
    assert "per forward pass" in line, line
    assert not (tmp_path / "run").exists()


def test_training_that_fits_is_not_refused(data, tmp_path):
    result = invoke(_train(data, tmp_path / "run", "--iterations", "1"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_eval_panoptic_task_on_a_semantic_checkpoint_is_refused(data, semantic_checkpoint):
    args = ["eval", "--checkpoint", semantic_checkpoint, "--data", data, "--task", "panoptic", "--limit", "1"]
    line = assert_one_line_error(invoke(args), "--task panoptic needs a panoptic model", "tiny.safetensors")
    assert "semantic" in line
    result = RUNNER.invoke(
        app,
        [
            "eval",
            "--checkpoint",
            str(semantic_checkpoint),
            "--data",
            str(data),
            "--task",
            "semantic",
            "--limit",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("check") / "artifact"
    args = ["export", "--preset", TINY, "--height", "64", "--width", "64", "--simplifier", "none"]
    result = RUNNER.invoke(app, [*args, "--exporter", "torchscript", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("bomb.png", _png_declaring(65535, 65535), "over the limit"),
        ("cut.png", _png_declaring(64, 64)[:-12], "truncated"),
        ("text.png", b"not an image at all", "not an image"),
        ("empty.png", b"", "file is empty"),
    ],
    ids=["header-bomb", "truncated", "not-an-image", "empty"],
)
def test_check_image_goes_through_the_runtime_reader(exported, tmp_path, monkeypatch, name, content, needle):
    import cv2

    def never(*args: Any) -> None:
        raise AssertionError("decoded an image the header check should have refused")

    image = tmp_path / name
    image.write_bytes(content)
    monkeypatch.setattr(cv2, "imread", never)
    monkeypatch.setattr(cv2, "imdecode", never)
    line = assert_one_line_error(invoke(["check", exported, "--image", image, "--preset", TINY]), needle)
    assert name in line, line  # the file named (the engine reads --images files through the runtime)
