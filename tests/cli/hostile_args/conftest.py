"""The work folder, the tiny checkpoint and the synthetic dataset the hostile-argument tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pem.checkpoint import save_checkpoint
from pem.config import get_preset
from pem.model import PEM
from tests.helpers.cli import invoke
from tests.helpers.hostile_args import TINY


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def tiny_checkpoint(work: Path) -> Path:
    """A seeded tiny semantic checkpoint (weights + config)."""
    config = get_preset(TINY)
    torch.manual_seed(0)
    return save_checkpoint(PEM(config).eval(), config, work / "good" / "tiny.safetensors")


@pytest.fixture(scope="module")
def dataset(work: Path) -> Path:
    result = invoke(["make-synthetic", work / "data", "--train", "4", "--val", "2", "--size", "64x128"])
    assert result.exit_code == 0, result.output
    return work / "data"
