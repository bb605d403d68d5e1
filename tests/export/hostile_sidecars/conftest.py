"""The exported artifacts (one per head and input variant) the hostile-sidecar tests damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.hostile_artifacts import VARIANTS, export_artifact


@pytest.fixture(scope="package")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    return {name: export_artifact(root / name, **kwargs) for name, kwargs in VARIANTS.items()}
