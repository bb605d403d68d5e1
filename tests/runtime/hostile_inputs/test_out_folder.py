"""``pem-deploy infer --out`` against hostile targets (contract.output): the target's folder semantics."""

from __future__ import annotations

import json

import cv2
import numpy as np

from contract.output import LOCK_NAME, MANIFEST_NAME
from tests.helpers.cli import assert_one_line_error
from tests.helpers.filesystems import tree
from tests.helpers.hostile_inputs import PNG, encode, invoke_cli, read_labels
from tests.helpers.runtime_models import scene, semantic_model, write_artifact

# -- --out folder semantics ------------------------------------------------------------------


def test_out_dot_in_a_non_empty_cwd(model, scene_png, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    result = invoke_cli(["infer", str(model), str(scene_png), "--out", "."])
    assert_one_line_error(result, "holds files pem-deploy did not write (notes.txt, scene.png)")
    assert "--exist-ok" in result.output and tree(tmp_path) == before
    result = invoke_cli(["infer", str(model), str(scene_png), "--out", ".", "--exist-ok"])
    assert result.exit_code == 0, result.output
    after = tree(tmp_path)
    assert all(after[k] == v for k, v in before.items())  # nothing of the user's changed
    assert sorted(set(after) - set(before)) == [
        MANIFEST_NAME,
        "labels/scene.png.png",
        "overlay/scene.png.jpg",
        "predictions.json",
    ]
    assert not (tmp_path / LOCK_NAME).exists()


def test_out_is_an_existing_file(model, scene_png, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert_one_line_error(
        invoke_cli(["infer", str(model), str(scene_png), "--out", str(target)]),
        "is not a folder",
    )
    assert target.read_text() == "keep me"


def test_out_is_a_broken_symlink(model, scene_png, tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert_one_line_error(
        invoke_cli(["infer", str(model), str(scene_png), "--out", str(tmp_path / "link")]),
        "broken",
    )


def test_out_is_the_input_folder(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(PNG)
    before = tree(folder)
    for out in (folder, folder / "."):
        result = invoke_cli(["infer", str(model), str(folder), "--out", str(out), "--exist-ok"])
        assert_one_line_error(result, "is an input of this run")
    assert_one_line_error(
        invoke_cli(["infer", str(model), str(folder), "--out", str(folder / "sub" / "out")]),
        "lies inside the input folder",
    )
    assert tree(folder) == before and not (folder / "sub").exists()


def test_input_inside_our_labels_folder(model, tmp_path):
    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    (out / "labels" / "a.png").write_bytes(PNG)
    result = invoke_cli(["infer", str(model), str(out / "labels"), "--out", str(out), "--exist-ok"])
    assert_one_line_error(result, "where this run writes its outputs")


def test_out_contains_the_input_and_the_artifact(tmp_path):
    """The artifact and the images live in DIR: refused without --exist-ok, untouched with it."""
    work = tmp_path / "work"
    work.mkdir()
    model = write_artifact(work, semantic_model(32, 64))
    (work / "images").mkdir()
    (work / "images" / "x.png").write_bytes(encode(".png", scene()))
    (work / "labels").mkdir()
    (work / "labels" / "ground_truth.png").write_bytes(b"user data")
    before = tree(work)
    assert_one_line_error(
        invoke_cli(["infer", str(model), str(work / "images"), "--out", str(work)]),
        "did not write",
    )
    assert tree(work) == before
    result = invoke_cli(["infer", str(work), str(work / "images"), "--out", str(work), "--exist-ok"])
    assert result.exit_code == 0, result.output
    after = tree(work)
    assert all(after[k] == v for k, v in before.items())
    assert "labels/x.png.png" in after and "predictions.json" in after


def test_foreign_file_at_an_output_path_is_refused(model, scene_png, tmp_path):
    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    (out / "labels" / "scene.png.png").write_bytes(b"not ours")
    result = invoke_cli(["infer", str(model), str(scene_png), "--out", str(out), "--exist-ok"])
    assert_one_line_error(result, "was not written by pem-deploy")
    assert (out / "labels" / "scene.png.png").read_bytes() == b"not ours"
    assert sorted(p.name for p in out.iterdir()) == ["labels"]


def test_foreign_predictions_json_is_refused(model, scene_png, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.json").write_text('{"mine": true}')
    result = invoke_cli(["infer", str(model), str(scene_png), "--out", str(out), "--exist-ok"])
    assert_one_line_error(result, "predictions.json: exists and was not written by pem-deploy")
    assert (out / "predictions.json").read_text() == '{"mine": true}'


def test_rerun_with_exist_ok_replaces_only_ours_and_merges(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(".png", scene()))
    out = tmp_path / "out"
    assert invoke_cli(["infer", str(model), str(folder), "--out", str(out)]).exit_code == 0
    # Only our files there: a rerun replaces them without a flag.
    assert invoke_cli(["infer", str(model), str(folder), "--out", str(out)]).exit_code == 0
    (folder / "b.png").write_bytes(encode(".png", scene(20, 30)))
    (out / "mine.txt").write_text("user")
    assert_one_line_error(
        invoke_cli(["infer", str(model), str(folder), "--out", str(out)]),
        "did not write (mine.txt)",
    )
    assert invoke_cli(["infer", str(model), str(folder), "--out", str(out), "--exist-ok"]).exit_code == 0
    data = json.loads((out / "predictions.json").read_text())
    assert sorted(r["name"] for r in data["predictions"]) == ["a.png", "b.png"]
    assert (out / "mine.txt").read_text() == "user"
    single = tmp_path / "c.png"
    single.write_bytes(encode(".png", scene()))
    assert invoke_cli(["infer", str(model), str(single), "--out", str(out), "--exist-ok"]).exit_code == 0
    data = json.loads((out / "predictions.json").read_text())
    assert sorted(r["name"] for r in data["predictions"]) == ["a.png", "b.png", "c.png"]


def test_same_stem_inputs_do_not_collide(model, seg, tmp_path):
    folder = tmp_path / "in"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    images = {
        "x.png": scene(),
        "x.jpg": scene(30, 30),
        "X.png": scene(20, 50),
        "a/x.png": scene(16, 16),
        "b/x.png": scene(40, 24),
        "x.png.png": scene(10, 10),
    }
    for rel, image in images.items():
        cv2.imwrite(str(folder / rel), image)
    out = tmp_path / "out"
    assert invoke_cli(["infer", str(model), str(folder), "--out", str(out)]).exit_code == 0
    for rel in images:
        expected = seg.predict(cv2.imread(str(folder / rel))).labels
        np.testing.assert_array_equal(read_labels(out / "labels" / f"{rel}.png"), expected)
        assert (out / "overlay" / f"{rel}.jpg").is_file()
    data = json.loads((out / "predictions.json").read_text())
    assert sorted(r["name"] for r in data["predictions"]) == sorted(images)


def test_video_frames_named_under_the_video(model, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (80, 48))
    for _ in range(3):
        writer.write(scene())
    writer.release()
    out = tmp_path / "out"
    assert invoke_cli(["infer", str(model), str(video), "--out", str(out)]).exit_code == 0
    assert sorted(p.name for p in (out / "labels" / "clip.avi").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]
