"""Shared test set-up. Torch-free on purpose: the runtime tests also run in a venv without torch.

With ``PEM_DEPLOY_TORCH_FREE=1`` (how .ci/run runs tests/contract, tests/runtime and
tests/cli/runtime_only in its second venv) every attempt to import torch fails, and the session
fails if code of this project attempted one.
"""

import importlib.abc
import os
import sys
import traceback
from pathlib import Path

import pytest

TORCH_FREE = os.environ.get("PEM_DEPLOY_TORCH_FREE") == "1"
REPO = Path(__file__).resolve().parent.parent
_torch_import_attempts: list[str] = []


class _TorchBlocker(importlib.abc.MetaPathFinder):
    """Refuses ``torch`` and records which file of this repository asked for it."""

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname != "torch" and not fullname.startswith("torch."):
            return None
        for frame in reversed(traceback.extract_stack()[:-1]):
            file = Path(frame.filename)
            if "importlib" in frame.filename or frame.filename.startswith("<"):
                continue
            if REPO in file.resolve().parents and "site-packages" not in frame.filename:
                _torch_import_attempts.append(f"{file.relative_to(REPO)}:{frame.lineno} imports {fullname}")
            break
        raise ImportError(f"{fullname} is not available in the torch-free test run")


if TORCH_FREE:
    sys.meta_path.insert(0, _TorchBlocker())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if TORCH_FREE and (_torch_import_attempts or "torch" in sys.modules):
        attempts = sorted(set(_torch_import_attempts)) or ["torch is in sys.modules"]
        sys.stderr.write("torch-free run imported torch:\n  " + "\n  ".join(attempts) + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _seed() -> None:
    if not TORCH_FREE:
        import torch

        torch.manual_seed(0)
