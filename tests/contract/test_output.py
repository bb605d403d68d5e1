"""The one output mechanism (contract/output.py): its three rules on real file systems."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.errors import (
    OutputError,
    OutputExistsError,
    OutputIsInputError,
    OutputWriteError,
    PemDeployError,
)
from contract.fs import PAUSE_ENV, STAGING_PREFIX, atomic_write_bytes, staging_name, staging_pid
from contract.output import (
    MANIFEST_NAME,
    clean_stale_staging,
    discard_folder,
    guard_inputs,
    owns,
    staged_file,
    staged_folder,
    write_file,
)
from tests.helpers.filesystems import read_only_folder, small_disk, tree

REPO = Path(__file__).resolve().parents[2]


def _one_line(exc: BaseException, *words: str) -> None:
    text = str(exc)
    assert "\n" not in text and text, text
    for word in words:
        assert word in text, text


def _no_staging(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if STAGING_PREFIX in p.name], sorted(folder.rglob("*"))


# -- rule 1: never onto an input ------------------------------------------------------------


def test_guard_refuses_same_path_symlink_hard_link_and_inside_input_folder(tmp_path):
    ck = tmp_path / "ck.json"
    ck.write_text("{}")
    (tmp_path / "link.json").symlink_to(ck)
    os.link(ck, tmp_path / "hard.json")
    images = tmp_path / "images"
    images.mkdir()
    for target in (ck, tmp_path / "link.json", tmp_path / "hard.json", tmp_path / "sub" / ".." / "ck.json"):
        with pytest.raises(OutputIsInputError) as info:
            guard_inputs([target], [ck])
        _one_line(info.value, str(target), "input")
    for target in (images, images / "out", images / "a" / "b.png"):
        with pytest.raises(OutputIsInputError):
            guard_inputs([target], [images])
    guard_inputs([tmp_path / "other.json", tmp_path], [ck, images, None])  # beside is fine


def test_guard_sees_a_bind_mount_of_an_input_folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    done = subprocess.run(["mount", "--bind", str(images), str(mirror)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
    try:
        with pytest.raises(OutputIsInputError):
            guard_inputs([mirror / "x.png"], [images])
    finally:
        subprocess.run(["umount", str(mirror)], check=False)


@pytest.mark.parametrize("overwrite", [False, True])
def test_write_file_never_onto_an_input_whatever_the_flags(tmp_path, overwrite):
    ck = tmp_path / "ck.json"
    ck.write_text("config")
    with pytest.raises(OutputIsInputError):
        write_file(ck, "report", overwrite=overwrite, inputs=[tmp_path / "ck.safetensors", ck])
    assert ck.read_text() == "config"
    _no_staging(tmp_path)


@pytest.mark.parametrize("exist_ok", [False, True])
def test_folder_inside_an_input_folder_refused(tmp_path, exist_ok):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"png")
    for target in (images, images / "out"):
        with pytest.raises(OutputIsInputError), staged_folder(target, exist_ok=exist_ok, inputs=[images]):
            pass
    # And a file this run would write that is an input (a video inside the output folder):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.mp4").write_bytes(b"video")
    inputs = [out / "clip.mp4"]
    writer = staged_folder(out, exist_ok=True, overwrite=True, inputs=inputs)
    with pytest.raises(OutputIsInputError), writer as w:
        w.write("clip.mp4", b"x")
    assert (out / "clip.mp4").read_bytes() == b"video"
    assert tree(images) == {"a.png": b"png"}


# -- rule 2: never replace what we did not write --------------------------------------------


def test_write_file_refuses_an_existing_file_unless_overwrite(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("mine")
    with pytest.raises(OutputExistsError) as info:
        write_file(target, "new")
    _one_line(info.value, str(target), "--overwrite")
    assert target.read_text() == "mine"
    write_file(target, "new", overwrite=True)
    assert target.read_text() == "new"
    with pytest.raises(OutputExistsError):
        write_file(tmp_path, "x", overwrite=True)  # a folder is never a file target
    _no_staging(tmp_path)


def test_write_file_creates_parents_and_removes_them_on_failure(tmp_path):
    target = tmp_path / "a" / "b" / "r.json"
    with pytest.raises(RuntimeError), staged_file(target) as path:
        path.write_text("half")
        raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()
    write_file(target, "ok")
    assert target.read_text() == "ok"


def test_new_folder_appears_whole_with_a_manifest(tmp_path):
    out = tmp_path / "new" / "out"
    with staged_folder(out) as w:
        w.write("a.json", "{}")
        w.write("sub/b.png", b"png")
        (w.scratch / "tmp.bin").write_bytes(b"scratch")
        assert not out.exists()
    assert tree(out).keys() == {"a.json", "sub/b.png", MANIFEST_NAME}
    assert owns(out, "a.json") and owns(out, "sub/b.png")
    _no_staging(tmp_path)


def test_folder_with_foreign_files_needs_exist_ok_and_never_loses_them(tmp_path):
    out = tmp_path / "out"
    (out / "inputs").mkdir(parents=True)
    (out / "inputs" / "photo.jpg").write_bytes(b"photo")
    (out / "report.md").write_text("my notes")
    before = tree(out)
    with pytest.raises(OutputExistsError) as info, staged_folder(out, names=["report.md"]):
        pass
    _one_line(info.value, str(out), "--exist-ok")
    with pytest.raises(OutputExistsError) as info, staged_folder(out, exist_ok=True) as w:
        w.write("report.md", "ours")
    _one_line(info.value, "report.md", "--overwrite")
    assert tree(out) == before
    with staged_folder(out, exist_ok=True) as w:
        w.write("bench.json", "{}")
    after = tree(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) == set(before) | {"bench.json", MANIFEST_NAME}
    # Our own file is replaced by a later run; an edited one is no longer ours.
    with staged_folder(out, exist_ok=True) as w:
        w.write("bench.json", "{2}")
    assert (out / "bench.json").read_text() == "{2}"
    time.sleep(0.01)
    (out / "bench.json").write_text("edited by hand")
    with pytest.raises(OutputExistsError), staged_folder(out, exist_ok=True) as w:
        w.write("bench.json", "{3}")
    assert (out / "bench.json").read_text() == "edited by hand"
    with staged_folder(out, exist_ok=True, overwrite=True) as w:
        w.write("bench.json", "{3}")
    assert (out / "bench.json").read_text() == "{3}"


def test_folder_of_our_own_files_is_reused_without_flags(tmp_path):
    out = tmp_path / "out"
    with staged_folder(out) as w:
        w.write("x/a.txt", "1")
    with staged_folder(out) as w:
        w.write("x/a.txt", "2")
        w.write("b.txt", "3")
    assert (out / "x" / "a.txt").read_text() == "2"
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == {"x/a.txt", "b.txt"}


def test_discard_folder_removes_it_whole_and_a_kill_leaves_only_staging(tmp_path):
    out = tmp_path / "out"
    with staged_folder(out) as w:
        w.write("x/a.txt", "1")
    (tmp_path / "beside.txt").write_text("kept")
    discard_folder(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beside.txt"]
    discard_folder(out)  # already gone: nothing to do
    # A removal killed half way: the folder had been renamed to a dead process's staging name.
    dead = tmp_path / f"{STAGING_PREFIX}999999999-abcdef01-out.tmp"
    (dead / "x").mkdir(parents=True)
    with staged_folder(out) as w:  # the next run beside it removes it
        w.write("a.txt", "2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beside.txt", "out"]


def test_nested_output_folder_keeps_its_own_manifest(tmp_path):
    out = tmp_path / "demo"
    with staged_folder(out) as demo:
        with staged_folder(demo.staging / "artifacts" / "fp32") as inner:
            inner.write("model.onnx", b"onnx")
        demo.write("report.md", "r")
        demo.register_tree()
    assert owns(out, "artifacts/fp32/model.onnx")
    assert owns(out / "artifacts" / "fp32", "model.onnx")
    with staged_folder(out / "artifacts" / "fp32") as again:  # no foreign files there: no flag
        again.write("model.onnx", b"onnx2")


def test_a_link_in_the_way_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "labels").symlink_to(elsewhere)
    with pytest.raises(OutputExistsError), staged_folder(out, exist_ok=True, overwrite=True) as w:
        w.write("labels/a.png", b"x")
    assert list(elsewhere.iterdir()) == []


def test_bad_output_names_are_refused(tmp_path):
    with staged_folder(tmp_path / "o") as w:
        for bad in ("../x", "/abs", MANIFEST_NAME, staging_name("x"), ""):
            with pytest.raises(OutputError):
                w.path(bad)


# -- rule 3: failures and kills leave the target as it was ----------------------------------


def test_failure_inside_a_folder_run_leaves_it_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    with pytest.raises(ValueError), staged_folder(out, exist_ok=True) as w:
        w.write("a.txt", "a")
        raise ValueError("model failed")
    assert tree(out) == {"keep.txt": b"keep"}
    with pytest.raises(ValueError), staged_folder(tmp_path / "new" / "deeper") as w:
        raise ValueError("x")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("kind", ["file", "new folder", "existing folder"])
def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, kind):
    with small_disk(tmp_path / "disk", "64k") as disk:
        (disk / "out").mkdir()
        (disk / "out" / "keep.txt").write_text("k")
        with pytest.raises(OutputWriteError) as info:
            if kind == "file":
                write_file(disk / "r.json", b"x" * 200_000)
            else:
                target = disk / ("new" if kind == "new folder" else "out")
                with staged_folder(target, exist_ok=True) as w:
                    w.write("big.bin", b"x" * 200_000)
        _one_line(info.value, "No space left on device")
        _no_staging(disk)
        assert not (disk / "new").exists() and not (disk / "r.json").exists()
        assert not (disk / "out" / "big.bin").exists()


def test_atomic_write_bytes_names_the_file_on_a_full_disk(tmp_path):
    with small_disk(tmp_path / "disk", "64k", fill=True) as disk:
        (disk / ".filler").unlink()
        (disk / "keep").write_bytes(b"k" * 32_000)
        with pytest.raises(OSError) as info:
            atomic_write_bytes(disk / "cache.bin", b"x" * 200_000)
        assert str(disk / "cache.bin") in str(info.value)
        _no_staging(disk)


def test_read_only_folder_is_one_line(tmp_path):
    with read_only_folder(tmp_path / "ro", {"keep.txt": b"k"}) as ro:
        for action in (
            lambda: write_file(ro / "r.json", "x"),
            lambda: staged_folder(ro, exist_ok=True).__enter__(),
            lambda: staged_folder(ro / "new").__enter__(),
        ):
            with pytest.raises(OutputWriteError) as info:
                action()
            _one_line(info.value, "Read-only file system")
            assert isinstance(info.value, PemDeployError)
        assert tree(ro) == {"keep.txt": b"k"}


_KILLED_WRITER = """
import sys
from contract.output import staged_folder, write_file
kind, target = sys.argv[1], sys.argv[2]
if kind == "file":
    write_file(target, b"new" * 1000, overwrite=True)
else:
    with staged_folder(target, exist_ok=True) as w:
        w.write("a.txt", "new")
        w.write("sub/b.txt", "new")
"""


@pytest.mark.parametrize("kind", ["file", "folder", "new folder"])
def test_kill_before_commit_leaves_target_and_the_next_run_cleans_up(tmp_path, kind):
    base = tmp_path / "base"
    base.mkdir()
    (base / "keep.txt").write_text("keep")
    target = base / ("r.json" if kind == "file" else "out" if kind == "folder" else "fresh")
    if kind == "file":
        target.write_text("old")
    elif kind == "folder":
        target.mkdir()
        (target / "user.txt").write_text("user")
    before = tree(base)
    env = dict(os.environ, PYTHONPATH=str(REPO), **{PAUSE_ENV: "60"})
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, "file" if kind == "file" else "folder", str(target)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        where = target if kind == "folder" else base

        def staged() -> list[Path]:
            return [p for p in where.iterdir() if staging_pid(p.name) == proc.pid]

        while not staged() and time.monotonic() < deadline:
            assert proc.poll() is None, "the writer ended before its commit"
            time.sleep(0.02)
        time.sleep(0.3)  # it is now sleeping in the pause before its first rename
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert staged(), "the kill left no staging to clean (the test would prove nothing)"
    assert {k: v for k, v in tree(base).items() if STAGING_PREFIX not in k} == before
    assert not target.exists() or kind != "new folder"
    clean_stale_staging(where)
    _no_staging(base)
    assert tree(base) == before


def test_live_staging_of_another_run_is_left_alone(tmp_path):
    live = tmp_path / staging_name("x")  # our own pid: alive
    live.mkdir()
    dead = tmp_path / f"{STAGING_PREFIX}999999999-abcdef01-x.tmp"
    dead.mkdir()
    lookalike = tmp_path / ".pem-deploy-staging-notapid"
    lookalike.mkdir()
    assert clean_stale_staging(tmp_path) == [dead]
    assert live.exists() and lookalike.exists()


def test_second_writer_into_the_same_folder_fails_at_once(tmp_path):
    out = tmp_path / "out"
    with staged_folder(out) as w:
        w.write("a", "1")
    with staged_folder(out) as first:
        with pytest.raises(OutputError) as info, staged_folder(out):
            pass
        _one_line(info.value, "another pem-deploy run")
        first.write("b", "2")
    assert (out / "b").read_text() == "2"


def test_staging_of_earlier_versions_is_removed_when_provably_dead(tmp_path):
    dead_export = tmp_path / ".pem-export-999999999-abcd_123"
    dead_infer = tmp_path / ".pem-deploy-staging-999999999-0123abcd"
    live_export = tmp_path / f".pem-export-{os.getpid()}-abcd_123"
    old_bag = tmp_path / ".seg.mcap.k2j4_x9a"
    fresh_bag = tmp_path / ".seg.db3.q2j4_x9a"
    not_a_bag = tmp_path / ".seg.mcap.zzzzzzzz"
    for folder in (dead_export, dead_infer, live_export):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half")
    for folder in (old_bag, fresh_bag, not_a_bag):
        (folder / "bag").mkdir(parents=True)
        (folder / "bag" / "bag.mcap").write_bytes(b"half")
    (not_a_bag / "notes.txt").write_text("the user's")
    hour_ago = time.time() - 7200
    for path in (
        old_bag / "bag" / "bag.mcap",
        old_bag / "bag",
        old_bag,
        not_a_bag / "bag" / "bag.mcap",
        not_a_bag,
    ):
        os.utime(path, (hour_ago, hour_ago))
    removed = set(clean_stale_staging(tmp_path))
    assert removed == {dead_export, dead_infer, old_bag}
    assert live_export.exists() and fresh_bag.exists() and not_a_bag.exists()


def test_failure_between_two_renames_leaves_every_file_recorded(tmp_path, monkeypatch):
    """The manifest is written before the renames with the old and the new fingerprint of each
    file: whatever rename a crash stops at, every file there is still recognised as ours."""
    out = tmp_path / "out"
    with staged_folder(out) as w:
        w.write("a.txt", "a1")
        w.write("b.txt", "b1")
    real_replace = os.replace

    def flaky(src, dst):
        if str(dst).endswith("b.txt"):  # the manifest and a.txt are in place, b.txt fails
            raise OSError(5, "Input/output error", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OutputWriteError), staged_folder(out) as w:
        w.write("a.txt", "a2")
        w.write("b.txt", "b2")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (out / "a.txt").read_text() == "a2" and (out / "b.txt").read_text() == "b1"
    assert owns(out, "a.txt") and owns(out, "b.txt")
    with staged_folder(out) as w:  # no flag needed: both are ours
        w.write("a.txt", "a3")
        w.write("b.txt", "b3")
    assert tree(out)["b.txt"] == b"b3"
    _no_staging(tmp_path)
