"""Writers against an existing artifact, a full disk and a read-only folder (contract.output): one
line, and nothing partial left.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.output import MANIFEST_NAME
from tests.helpers.cli import assert_one_line_error, invoke
from tests.helpers.hostile_args import TINY, fast_export, no_partial_files

# ---------------------------------------------------------------------------------------------
# Writers: existing artifact, full disk, read-only folder


@pytest.fixture(scope="module")
def exported(work: Path) -> Path:
    out = work / "artifact"
    result = invoke(fast_export(out))
    assert result.exit_code == 0, result.output
    return out


def test_existing_artifact_refused_then_exist_ok(exported: Path) -> None:
    user = exported / "notes.txt"
    user.write_text("mine")
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    assert_one_line_error(invoke(fast_export(exported)), "did not write (notes.txt)", "--exist-ok")
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before
    result = invoke(fast_export(exported, "--exist-ok"))  # our own model.onnx / .json: replaced
    assert result.exit_code == 0, result.output
    assert user.read_text() == "mine" and sorted(p.name for p in exported.iterdir()) == [
        MANIFEST_NAME,
        "model.json",
        "model.onnx",
        "notes.txt",
    ]
    assert no_partial_files(exported) == []
    (exported / "model.onnx").write_bytes(b"the user's own model")  # no longer ours
    assert_one_line_error(
        invoke(fast_export(exported, "--exist-ok")), "model.onnx: exists and was not written", "--overwrite"
    )
    assert (exported / "model.onnx").read_bytes() == b"the user's own model"
    result = invoke(fast_export(exported, "--exist-ok", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert (exported / "model.onnx").read_bytes() != b"the user's own model"


def test_bench_artifact_too_large(exported: Path) -> None:
    start = time.perf_counter()
    result = invoke(["bench", exported / "model.onnx", "--shape", "40000x40000"])
    assert time.perf_counter() - start < 5
    assert_one_line_error(result, "bench at 40000x40000", "needs about")


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str, needs_root: str) -> Iterator[Path]:
    """``folder`` as a tmpfs mounted with ``options``, unmounted on exit; skips the test where it
    cannot mount one (``needs_root``: the skip reason when not root)."""
    if os.geteuid() != 0:
        pytest.skip(needs_root)
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): full-disk test skipped"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, filled up."""
    with _tmpfs(tmp_path / "full", "size=64k", "mounting a tmpfs needs root") as folder:
        try:
            with open(folder / "filler", "wb") as f:
                for _ in range(64):
                    f.write(b"x" * 4096)
                    f.flush()
        except OSError:
            pass
        yield folder


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs (chmod does not stop root)."""
    why = "mounting a read-only tmpfs needs root (chmod does not stop root)"
    with _tmpfs(tmp_path / "ro", "ro,size=64k", why) as folder:
        yield folder


_WRITERS = {
    "export": [*fast_export(Path("D") / "art")],
    "make-synthetic": ["make-synthetic", "D/syn", "--train", "2", "--val", "1", "--size", "64x128"],
    "eval-json": ["eval", "--checkpoint", "CK", "--data", "DATA", "--limit", "1", "--json", "D/m.json"],
    "eval-save-predictions": [
        *("eval", "--checkpoint", "CK", "--data", "DATA", "--limit", "1", "--save-predictions", "D/preds"),
    ],
    "bench-out": [
        *(
            "bench",
            "--preset",
            TINY,
            "--shape",
            "64x64",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--out",
            "D/b",
        ),
    ],
    "train": [
        *("train", "--preset", TINY, "--data", "DATA", "--out", "D/run", "--iterations", "1"),
        *("--batch-size", "2", "--crop", "64x64", "--num-points", "64", "--no-eval"),
    ],
}


@pytest.mark.parametrize("writer", list(_WRITERS))
@pytest.mark.parametrize("fault", ["full_disk", "read_only"])
def test_writer_faults(request, fault: str, writer: str, tiny_checkpoint: Path, dataset: Path) -> None:
    """Every writer on a full disk or a read-only folder: one line, nothing partial left."""
    folder = request.getfixturevalue(fault)
    before = sorted(p.name for p in folder.iterdir())
    subs = {"CK": str(tiny_checkpoint), "DATA": str(dataset)}
    args = [subs.get(str(a), str(a)).replace("D/", f"{folder}/", 1) for a in _WRITERS[writer]]
    result = invoke(args)
    reason = "No space left on device" if fault == "full_disk" else "Read-only file system"
    line = assert_one_line_error(result)
    assert reason in line or "could not write" in line, line
    assert sorted(p.name for p in folder.iterdir()) == before  # no output, no temp, no 0-byte file
