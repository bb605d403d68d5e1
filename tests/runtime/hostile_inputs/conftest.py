"""The tiny artifact and the scene image the hostile-input tests run on (tests/helpers/runtime_models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import Segmenter
from tests.helpers.hostile_inputs import encode
from tests.helpers.runtime_models import scene, semantic_model, write_artifact

# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def model(tmp_path_factory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("model"), semantic_model(32, 64))


@pytest.fixture(scope="package")
def seg(model) -> Segmenter:
    return Segmenter.open(model)


@pytest.fixture()
def scene_png(tmp_path) -> Path:
    path = tmp_path / "scene.png"
    path.write_bytes(encode(".png", scene()))
    return path
