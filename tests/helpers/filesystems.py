"""Small real file systems for output tests: a full disk and a read-only folder (tmpfs mounts).

They need root and mount(8); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(path: Path, options: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a small tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@contextlib.contextmanager
def small_disk(path: Path, size: str = "64k", fill: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path``; ``fill`` leaves no free byte (a full disk)."""
    _mount(path, f"size={size}")
    try:
        if fill:
            with contextlib.suppress(OSError), open(path / ".filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def read_only_folder(path: Path, files: dict[str, bytes] | None = None) -> Iterator[Path]:
    """A read-only tmpfs at ``path`` holding ``files`` (relative name -> content)."""
    _mount(path, "size=1m")
    try:
        for name, data in (files or {}).items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
        done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount a tmpfs read-only: {done.stderr.decode().strip()}")
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def tree(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (relative name -> bytes), links and folders left out."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }
