"""Hostile input folders (runtime.io.batch_infer): file-system oddities skipped with one line each,
huge files not read, size limits from the environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.cli import assert_one_line_error
from tests.helpers.hostile_inputs import PNG, color_image, encode, invoke_cli
from tests.helpers.runtime_models import scene

# -- file-system oddities inside a folder: skipped with one line each --------------------------


def _fs_case(kind: str, folder: Path) -> str | None:
    target = folder / "bad.png"
    if kind == "broken symlink":
        target.symlink_to(folder / "missing.png")
        return "broken symbolic link"
    if kind == "symlink loop":
        (folder / "loop2.lnk").symlink_to(target)
        target.symlink_to(folder / "loop2.lnk")
        return "symbolic link loop"
    if kind == "folder named png":
        target.mkdir()
        (target / "inner.txt").write_text("x")
        return None  # a folder is not listed as an image at all
    if kind == "fifo named png":
        os.mkfifo(target)
        return "not a regular file"
    if kind == "text file named png":
        target.write_text("not an image")
        return "not an image"
    if kind == "symlinked folder loop":
        (folder / "sub").mkdir()
        (folder / "sub" / "up").symlink_to(folder)
        return None
    if kind == "unreadable file":
        if os.geteuid() == 0:
            pytest.skip("running as root: file permissions do not stop reads")
        target.write_bytes(PNG)
        target.chmod(0)
        return "Permission denied"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "broken symlink",
        "symlink loop",
        "folder named png",
        "fifo named png",
        "text file named png",
        "symlinked folder loop",
        "unreadable file",
    ],
)
def test_folder_skips_unreadable_entries(kind, model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        (folder / f"ok{i}.png").write_bytes(encode(".png", scene()))
    message = _fs_case(kind, folder)
    out = tmp_path / "out"
    result = invoke_cli(["infer", str(model), str(folder), "--out", str(out)])
    lines = result.output.strip().splitlines()
    if message is None:
        assert result.exit_code == 0, result.output
        assert lines[-1].startswith("2 frame(s) -> ")
    else:
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        skipped = [line for line in lines if line.startswith("skipped: ")]
        assert len(skipped) == 1 and message in skipped[0] and "bad.png" in skipped[0], result.output
        assert lines[-1].startswith("2 frame(s), 1 skipped -> ")
        failed = json.loads((out / "predictions.json").read_text())["failed"]
        assert [f["name"] for f in failed] == ["bad.png"]
        strict = invoke_cli(["infer", str(model), str(folder), "--out", str(tmp_path / "o2"), "--strict"])
        assert_one_line_error(strict, message)
        assert not (tmp_path / "o2").exists()
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["ok0.png.png", "ok1.png.png"]


def test_folder_where_nothing_is_readable(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"bad{i}.png").write_text("x")
    result = invoke_cli(["infer", str(model), str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.count("skipped: ") == 3
    assert result.output.strip().splitlines()[-1].startswith("error: ") and "none of the 3" in result.output
    assert not (tmp_path / "out").exists()


def test_huge_sparse_file_named_png_is_not_read(model, tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.write(PNG[:33])
        f.truncate(3 << 30)  # sparse: no disk used
    result = invoke_cli(["infer", str(model), str(path), "--out", str(tmp_path / "out")])
    assert_one_line_error(result, "over the limit of 1073741824 (raise it with PEM_DEPLOY_MAX_IMAGE_BYTES")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PEM_DEPLOY_MAX_PIXELS": "100"}, "over the limit of 100 (raise it with PEM_DEPLOY_MAX_PIXELS"),
        ({"PEM_DEPLOY_MAX_PIXELS": "many"}, "PEM_DEPLOY_MAX_PIXELS='many': not an integer"),
        ({"PEM_DEPLOY_MAX_PIXELS": "-5"}, "must be a positive integer"),
        (
            {"PEM_DEPLOY_MAX_IMAGE_BYTES": "10"},
            "over the limit of 10 (raise it with PEM_DEPLOY_MAX_IMAGE_BYTES",
        ),
    ],
)
def test_limits_from_the_environment(env, message, model, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    result = invoke_cli(["infer", str(model), str(path), "--out", str(tmp_path / "out")], env=env)
    assert_one_line_error(result, message)


def test_raised_limit_accepts(model, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(".png", color_image(120, 100)))
    env = {"PEM_DEPLOY_MAX_PIXELS": "12000"}
    assert invoke_cli(["infer", str(model), str(path), "--out", str(tmp_path / "o")], env=env).exit_code == 0
