"""``pem-deploy infer --out`` under faults (contract.output): a read-only folder, a full disk, a second
run and threads in one folder, stale staging, kill -9 at each phase; nothing partial is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.errors import PemDeployError
from contract.fs import STAGING_PREFIX
from contract.output import LOCK_NAME, MANIFEST_NAME, _Lock
from runtime.io.batch_infer import infer_path
from tests.helpers.cli import assert_one_line_error
from tests.helpers.concurrency import run_in_threads
from tests.helpers.filesystems import read_only_folder, small_disk
from tests.helpers.hostile_inputs import assert_nothing_partial, color_image, encode, invoke_cli
from tests.helpers.runtime_models import scene

ROOT = Path(__file__).parents[3]


# -- file-system faults: read-only folder, full disk -------------------------------------------


def test_read_only_output_folder(model, scene_png, tmp_path):
    with read_only_folder(tmp_path / "ro", {"keep.txt": b"x"}) as mnt:
        result = invoke_cli(["infer", str(model), str(scene_png), "--out", str(mnt), "--exist-ok"])
        assert_one_line_error(result, "Read-only file system")
        result = invoke_cli(["infer", str(model), str(scene_png), "--out", str(mnt / "new")])
        assert_one_line_error(result, "Read-only file system")
        assert sorted(p.name for p in mnt.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("size", ["16k", "64k", "200k"])
def test_full_disk_leaves_nothing_partial(size, model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        (folder / f"n{i:02d}.png").write_bytes(encode(".png", color_image(64, 96, seed=i)))
    with small_disk(tmp_path / "small", size) as mnt:
        out = mnt / "out"
        result = invoke_cli(["infer", str(model), str(folder), "--out", str(out)])
        if result.exit_code == 0:  # it fitted: then everything is there
            assert len(list((out / "labels").iterdir())) == 12
        else:
            assert_one_line_error(result, "No space left on device")
            assert not out.exists()  # created by the run, removed again
        assert not [p for p in mnt.rglob("*") if p.name.endswith(".tmp")]


# -- concurrency and staging -----------------------------------------------------------------


def test_second_run_while_locked_fails_with_one_line(model, scene_png, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lock = _Lock(out)
    try:
        result = invoke_cli(["infer", str(model), str(scene_png), "--out", str(out)])
        assert_one_line_error(result, "another pem-deploy run is writing into this folder")
    finally:
        lock.release()
    assert invoke_cli(["infer", str(model), str(scene_png), "--out", str(out)]).exit_code == 0


@pytest.mark.parametrize("exist_ok", [False, True])
def test_two_threads_into_one_folder(exist_ok, seg, tmp_path):
    folders = []
    for t in range(2):
        folder = tmp_path / f"in{t}"
        folder.mkdir()
        for i in range(6):
            (folder / f"t{t}_{i}.png").write_bytes(encode(".png", scene()))
        folders.append(folder)
    out = tmp_path / "out"
    outcomes: list[object] = [None, None]

    def work(t: int) -> None:
        try:
            outcomes[t] = infer_path(seg, folders[t], out, exist_ok=exist_ok)
        except PemDeployError as exc:
            outcomes[t] = exc

    run_in_threads(work, 2)
    ok = [t for t in range(2) if not isinstance(outcomes[t], PemDeployError)]
    assert ok, outcomes
    for t in range(2):
        if isinstance(outcomes[t], PemDeployError):
            text = str(outcomes[t])
            assert "another pem-deploy run" in text or "appeared while" in text, text
    names = {r["name"] for r in json.loads((out / "predictions.json").read_text())["predictions"]}
    for t in ok:  # every successful run's results are all there: none silently lost
        assert {f"t{t}_{i}.png" for i in range(6)} <= names
        assert all((out / "labels" / f"t{t}_{i}.png.png").is_file() for i in range(6))
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "labels", "overlay", "predictions.json"]


def test_stale_staging_is_cleaned_only_when_ours(model, scene_png, tmp_path):
    out = tmp_path / "out"
    for stale in (
        tmp_path / f"{STAGING_PREFIX}999999999-deadbeef-out.tmp",
        out / f"{STAGING_PREFIX}999999998-0badf00d-out.tmp",
    ):
        (stale / "labels").mkdir(parents=True)
        (stale / "labels" / "half.png.png").write_bytes(b"\x89PNG half")
    result = invoke_cli(["infer", str(model), str(scene_png), "--out", str(out)])
    assert result.exit_code == 0, result.output  # only our leftovers: counts as empty
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "labels", "overlay", "predictions.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]
    lookalike = out / f"{STAGING_PREFIX}user"
    lookalike.mkdir()
    (lookalike / "data.txt").write_text("user")
    assert_one_line_error(
        invoke_cli(["infer", str(model), str(scene_png), "--out", str(out)]), "did not write"
    )
    assert invoke_cli(["infer", str(model), str(scene_png), "--out", str(out), "--exist-ok"]).exit_code == 0
    assert (lookalike / "data.txt").read_text() == "user"  # no pid in its name: not provably ours, kept


# -- kill -9 sweep ----------------------------------------------------------------------------

_CLI = "import sys; sys.argv[0] = 'pem-deploy'; import cli; cli.app()"


def _phase_reached(out: Path, phase: str) -> bool:
    if phase == "started":
        return out.exists()
    stagings = list(out.parent.glob(f"{STAGING_PREFIX}*"))
    stagings += list(out.glob(f"{STAGING_PREFIX}*")) if out.exists() else []
    if phase == "mid-folder":
        return any(len(list((s / "labels").glob("*.png"))) >= 20 for s in stagings if (s / "labels").is_dir())
    return (out / "labels").is_dir()  # "moving": the first outputs are being renamed in


@pytest.mark.parametrize("phase", ["started", "mid-folder", "moving"])
def test_kill_9_sweep(phase, model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    count = 150
    for i in range(count):
        (folder / f"k{i:03d}.png").write_bytes(encode(".png", color_image(24, 32, seed=i)))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, "infer", str(model), str(folder), "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and not _phase_reached(out, phase) and time.monotonic() < deadline:
        time.sleep(0.0005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if out.exists():
        assert_nothing_partial(out)
    rerun = invoke_cli(["infer", str(model), str(folder), "--out", str(out), "--exist-ok"])
    assert rerun.exit_code == 0, rerun.output
    assert not list(out.glob(f"{STAGING_PREFIX}*")) and not list(tmp_path.glob(f"{STAGING_PREFIX}*"))
    assert not (out / LOCK_NAME).exists()
    assert len(list((out / "labels").iterdir())) == count
    data = json.loads((out / "predictions.json").read_text())
    assert len(data["predictions"]) == count
    assert_nothing_partial(out)
