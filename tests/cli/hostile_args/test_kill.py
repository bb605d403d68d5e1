"""A kill -9 sweep of export, calibrate and train in subprocesses: nothing partial may be left, and
``train --resume`` after a kill must finish the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.fs import STAGING_PREFIX, staging_pid
from contract.output import MANIFEST_NAME
from export.metadata import ArtifactWriter
from pem.checkpoint import verify_checkpoint
from tests.helpers.cli import invoke
from tests.helpers.hostile_args import TINY, fast_export, no_partial_files

REPO = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------------------------
# kill -9 sweep


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *[str(a) for a in args]],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL after ``seconds`` unless it ended; True when it was killed."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _staging(root: Path, with_file: bool) -> bool:
    """Whether a writer's staging folder (``.pem-deploy-staging-<pid>-*``) exists under ``root``
    (holding a file)."""
    for entry in root.glob(f"{STAGING_PREFIX}*"):
        live = staging_pid(entry.name) is not None and entry.is_dir()
        if live and (not with_file or any(p.is_file() for p in entry.rglob("*"))):
            return True
    return False


def _kill_when(proc: subprocess.Popen, root: Path, with_file: bool, timeout: float = 90.0) -> bool:
    """SIGKILL as soon as a staging folder shows up under ``root``; True when it was killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _staging(root, with_file):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)  # the staged files live only milliseconds before they move in
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return False


def _assert_nothing_partial(out: Path, complete: set[str]) -> None:
    parent = out.parent
    stale = [p for p in parent.iterdir() if p.name.startswith(STAGING_PREFIX)]
    if out.exists():
        names = {p.name for p in out.iterdir()}
        # An empty folder (made before the kill, nothing moved in yet) holds nothing partial, and
        # the next export into it is not refused; otherwise every file must be there.
        assert names in (set(), complete | {MANIFEST_NAME}), names
        assert no_partial_files(out) == []
    # staging of a killed run may remain beside the folder (hidden); the next run removes it
    assert all(p.is_dir() for p in stale)


@pytest.mark.parametrize("when", [0.5, 2.0, "staging-with-file"])
def test_kill_export(work: Path, when: float | str) -> None:
    """Killed at fixed times and while the files are staged (right before they move in)."""
    # The staging window is a few milliseconds: try a few runs until one is caught inside it.
    for attempt in range(5):
        root = work / f"kill-export-{when}-{attempt}"
        root.mkdir()
        out = root / "art"
        proc = _spawn(fast_export(out), REPO)
        killed = (
            _kill_after(proc, when) if isinstance(when, float) else _kill_when(proc, root, with_file=True)
        )
        if isinstance(when, float) or (killed and _staging(root, True)):
            break
        _assert_nothing_partial(out, {"model.onnx", "model.json"})  # missed: the run completed
    if not isinstance(when, float):
        assert killed and _staging(root, True), "the export was not caught while staging (5 tries)"
    _assert_nothing_partial(out, {"model.onnx", "model.json"})
    if killed and not isinstance(when, float):
        # the next export into that folder removes the dead run's staging as it starts
        with ArtifactWriter(out, names=("model.onnx", "model.json")):
            pass
        assert not [p for p in root.iterdir() if staging_pid(p.name) is not None]


@pytest.mark.parametrize("when", [0.5, 5.0, "staging"])
def test_kill_calibrate(work: Path, when: float | str) -> None:
    """Killed at fixed times and once its staging folder exists (export + calibration under way)."""
    root = work / f"kill-calib-{when}"
    root.mkdir()
    out = root / "int8"
    args = [
        "calibrate",
        "--preset",
        TINY,
        "--height",
        "64",
        "--width",
        "64",
        "--calib-images",
        "4",
        "--no-report",
        "--out",
        out,
    ]
    proc = _spawn(args, REPO)
    killed = _kill_after(proc, when) if isinstance(when, float) else _kill_when(proc, root, with_file=False)
    assert killed, "calibrate finished before the kill"
    _assert_nothing_partial(out, {"model.onnx", "model.json", "model.cache"})


def test_kill_train_then_resume(work: Path, dataset: Path) -> None:
    out = work / "kill-train"
    args = [
        *(
            "train",
            "--preset",
            TINY,
            "--data",
            dataset,
            "--out",
            out,
            "--iterations",
            "6",
            "--batch-size",
            "2",
        ),
        *("--crop", "64x64", "--num-points", "64", "--checkpoint-period", "2", "--no-eval", "--threads", "1"),
    ]
    proc = _spawn(args, REPO)
    state = out / "last_state.safetensors"
    deadline = time.monotonic() + 60
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists(), "no training state was written before the kill"
    # A SIGKILL can land mid-write, leaving a staging file: nothing can remove it then, so only
    # whole files may carry final names, and the next run must clear the staging away.
    leftovers = no_partial_files(out)
    assert all(p.name.endswith(".tmp") or p.name.startswith(STAGING_PREFIX) for p in leftovers), leftovers
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "trained 6 steps" in result.output
    assert (out / "model.safetensors").is_file() and no_partial_files(out) == []
    verify_checkpoint(out / "model.safetensors")
