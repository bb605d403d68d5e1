"""The torch commands in an install without torch (``pip install -e ".[ort]"``): one line naming
what to install, exit status 2, never a traceback.

Each command runs as a real ``pem-deploy`` process in which torch cannot be imported: in CI's
torch-free venv it is simply absent; in a venv with torch a meta-path finder refuses it the way a
missing package fails (``ModuleNotFoundError`` with ``name='torch'``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
_NO_TORCH_CLI = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None

sys.meta_path.insert(0, NoTorch())
sys.argv[0] = "pem-deploy"
from cli import app
app()
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PEM_DEPLOY_CACHE": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-c", _NO_TORCH_CLI, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["info", "--list"], "model"),
        (["info", "--preset", "cityscapes-semantic-tiny"], "model"),
        (["export", "--preset", "cityscapes-semantic-tiny", "--out", "art"], "export"),
        (["demo", "--out", "demo", "--quick"], "export"),
        (["bench", "model.safetensors"], "export"),
        (["train", "--preset", "cityscapes-semantic-tiny", "--data", "data"], "train"),
        (["calibrate", "--out", "int8"], "export"),
        (["check", "art"], "export"),
    ],
)
def test_torch_command_without_torch_names_the_install(tmp_path: Path, args: list[str], extra: str) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")  # bench dispatches on the suffix of a file
    result = _run(args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith(f"error: pem-deploy {args[0]} needs PyTorch and the '{extra}' extra")
    assert f'pip install torch==2.13.0 && pip install -e ".[{extra}]"' in lines[0]
    assert not [p for p in tmp_path.iterdir() if p.name not in ("model.safetensors", "cache")]


def test_runtime_command_still_runs_without_torch(tmp_path: Path) -> None:
    result = _run(["infer", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Segment images" in result.stdout
