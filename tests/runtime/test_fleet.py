"""``infer --ray`` / :func:`runtime.io.fleet.segment` on a local Ray cluster (2 CPUs), against the
single-machine ``infer`` on the same inputs: bags, a video and an image folder, bit for bit."""

from __future__ import annotations

import builtins
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from contract.fs import STAGING_PREFIX
from runtime.core.segmenter import Segmenter
from runtime.errors import InputError
from runtime.io.fleet import (
    FRAMES,
    INDEX,
    INDEX_COLUMNS,
    MANIFEST,
    SHARD_MARKER,
    UNCERTAIN,
    FleetProgress,
    ProgressPrinter,
    looks_like_address,
    plan_shards,
    run_shard,
    segment,
)
from runtime.io.images import load_image
from tests.helpers import fleet_data as fd

REPO = Path(__file__).resolve().parents[2]
TIMING = ("read_ms", "pre_ms", "infer_ms", "post_ms")


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray session for the module (its start-up costs seconds)."""
    ray = pytest.importorskip("ray", reason="the 'fleet' extra (ray[data], pyarrow) is not installed")
    pytest.importorskip("pyarrow")
    pytest.importorskip("rosbags", reason="the 'ros' extra (rosbags) is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    pytest.importorskip("rosbags", reason="the 'ros' extra (rosbags) is not installed")
    from rosbags.rosbag2 import StoragePlugin

    root = tmp_path_factory.mktemp("fleet_inputs")
    model = fd.raw_artifact(root / "model")
    bag_a = fd.write_bag(root / "drive_a", StoragePlugin.MCAP, 5, 1)  # a bag folder
    fd.write_bag(root / "drive_b", StoragePlugin.SQLITE3, 4, 2)
    bag_b = next((root / "drive_b").glob("*.db3"))  # a bag file
    fd.write_bag(root / "drive_c", StoragePlugin.MCAP, 3, 3)
    bag_c = next((root / "drive_c").glob("*.mcap"))
    video = fd.write_video(root / "clip.avi", 6, 4)
    images = fd.write_images(root / "cam", 7, 5)
    listing = root / "more.txt"  # a list file: relative paths, comments
    listing.write_text(f"# second half\n{bag_c.relative_to(root)}\n\nclip.avi\n")
    return {
        "root": root,
        "model": model,
        "bags": [bag_a, bag_b, bag_c],
        "video": video,
        "images": images,
        "list": listing,
    }


def _infer(*args: str) -> None:
    result = CliRunner().invoke(app, ["infer", *args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def single(inputs, tmp_path_factory):
    """The single-machine ``infer`` outputs of every input."""
    out = tmp_path_factory.mktemp("single")
    model = str(inputs["model"])
    topics = [x for t in fd.TOPICS for x in ("--topic", t)]
    for i, bag in enumerate(inputs["bags"]):
        _infer(model, str(bag), "--out", str(out / f"bag{i}.mcap"), *topics)
    _infer(model, str(inputs["video"]), "--out", str(out / "video"))
    _infer(model, str(inputs["images"]), "--out", str(out / "images"))
    return out


@pytest.fixture(scope="module")
def fleet(ray_session, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet") / "out"
    seen = []
    summary = segment(
        inputs["model"],
        [inputs["bags"][0], inputs["bags"][1], inputs["images"], inputs["list"]],
        out,
        topics=fd.TOPICS,
        workers=2,
        batch=3,
        images_per_shard=3,
        keep_uncertain=0.3,
        progress=lambda state: seen.append(state.text()),
        every=0.2,
    )
    return summary, out, seen


def _files(folder: Path) -> dict[str, bytes]:
    """The segmentation files of an output folder (not the run records: predictions.json, the
    hidden record of written files, the shard marker and rows)."""
    skip = {"predictions.json", FRAMES}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in skip
    }


def _index(out: Path):
    import pyarrow.parquet as pq

    return pq.read_table(out / INDEX).to_pylist()


def test_summary_and_manifest(fleet, inputs):
    summary, out, seen = fleet
    # 3 bags x 2 topics, 6 video frames, 7 images
    assert summary.frames == 2 * (5 + 4 + 3) + 6 + 7
    assert summary.failed == () and summary.skipped_frames == 0 and summary.resumed == 0
    assert summary.shards == 3 + 1 + 3  # the image folder in slices of 3
    manifest = json.loads((out / MANIFEST).read_text())
    assert {v["status"] for v in manifest["shards"].values()} == {"done"}
    assert len(manifest["shards"]) == summary.shards
    assert not [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert seen and seen[-1].startswith(f"{summary.frames}/{summary.frames} frames")
    assert "7/7 done, 0 failed" in seen[-1]


def test_bags_equal_single_machine(fleet, single, inputs):
    _, out, _ = fleet
    for i, bag in enumerate(inputs["bags"]):
        expected = fd.read_bag(single / f"bag{i}.mcap")
        got = fd.read_bag(out / bag.name / "segmentation.mcap")
        assert got.keys() == expected.keys()  # same topics
        for topic in expected:  # same stamps, same message bytes
            assert got[topic] == expected[topic], topic


def test_video_and_images_equal_single_machine(fleet, single, inputs):
    _, out, _ = fleet
    video = _files(out / "clip.avi")
    expected = _files(single / "video")
    assert len(expected) == 12 and {k: video[k] for k in expected} == expected  # labels and overlays
    parts = sorted((out / "cam").iterdir())
    assert [p.name for p in parts] == ["part-00000", "part-00001", "part-00002"]
    merged: dict[str, bytes] = {}
    for part in parts:
        files = _files(part)
        assert not merged.keys() & files.keys()
        merged.update(files)
    assert merged == _files(single / "images") and len(merged) == 14


def test_index_complete_and_correct(fleet, inputs):
    summary, out, _ = fleet
    rows = _index(out)
    assert len(rows) == summary.frames and set(rows[0]) == set(INDEX_COLUMNS)
    assert all(r["error"] is None and r["margin"] is not None for r in rows)
    segmenter = Segmenter.open(inputs["model"])
    from rosbags.rosbag2 import Reader

    for bag in inputs["bags"]:
        mine = [r for r in rows if r["source"] == str(bag)]
        with Reader(bag) as reader:
            wanted = [c for c in reader.connections if c.topic in fd.TOPICS]
            stamps = [(c.topic, t) for c, t, _ in reader.messages(connections=wanted)]
        assert [(r["topic"], r["stamp_ns"]) for r in mine] == stamps
        assert [r["index"] for r in mine] == list(range(len(stamps)))
        assert {r["output"] for r in mine} == {f"{bag.name}/segmentation.mcap"}
        assert {r["output_topic"] for r in mine} == {
            t + "/pem/labels" for t in ("/front/image_raw", "/side/image")
        }
        assert {r["frame_id"] for r in mine} == {"front", "side"}
    files = [r for r in rows if r["kind"] != "bag"]
    assert len(files) == 6 + 7
    for row in files:
        labels = cv2.imread(str(out / row["output"]), cv2.IMREAD_UNCHANGED)
        assert (row["height"], row["width"]) == labels.shape
        assert row["class_pixels"] == np.bincount(labels.ravel(), minlength=3).tolist()
        assert row["void_pixels"] == 0
    image_rows = [r for r in files if r["kind"] == "images"]
    assert sorted(r["frame"] for r in image_rows) == sorted(
        p.relative_to(inputs["images"]).as_posix() for p in inputs["images"].rglob("*.*")
    )
    for row in image_rows:
        expected = segmenter.predict(load_image(row["source"]).image)
        assert row["margin"] == pytest.approx(expected.margin, rel=1e-5)
        assert row["output"].startswith("cam/part-") and row["output"].endswith(
            "/labels/" + row["frame"] + ".png"
        )
    assert all(r[t] is not None and r[t] >= 0 for r in rows for t in TIMING)


def test_keep_uncertain_writes_lowest_margins(fleet, inputs):
    import pyarrow.parquet as pq

    summary, out, _ = fleet
    rows = _index(out)
    kept = pq.read_table(out / UNCERTAIN / INDEX).to_pylist()
    assert summary.uncertain == len(kept) == math.ceil(0.3 * len(rows))
    assert max(r["margin"] for r in kept) <= min(
        r["margin"] for r in rows if (r["shard"], r["index"]) not in {(k["shard"], k["index"]) for k in kept}
    )
    for row in kept:
        image = cv2.imread(str(out / row["image"]), cv2.IMREAD_UNCHANGED)
        if row["kind"] == "images":
            np.testing.assert_array_equal(image, load_image(row["source"]).image)
        assert image.shape[:2] == (row["height"], row["width"])


def test_corrupt_shard_reported_others_complete_then_resume(ray_session, inputs, tmp_path):
    broken = tmp_path / "broken.mcap"
    data = next(inputs["bags"][0].glob("*.mcap")).read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated mid-file
    out = tmp_path / "out"
    args = ["infer", str(inputs["model"]), str(broken), str(inputs["video"]), "--out", str(out)]
    args += [x for t in fd.TOPICS for x in ("--topic", t)] + ["--ray"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output
    assert f"failed: {broken}: {broken}" in first.output
    assert "6 frame(s) in 2 shard(s), 1 failed" in first.output
    manifest = json.loads((out / MANIFEST).read_text())["shards"]
    assert manifest[str(broken)]["status"] == "failed" and str(broken) in manifest[str(broken)]["error"]
    assert manifest[str(inputs["video"])]["status"] == "done"
    assert not (out / "broken.mcap").exists()  # nothing of the failed shard
    assert [r["kind"] for r in _index(out)] == ["video"] * 6
    second = CliRunner().invoke(app, args)  # the video is skipped, the bag retried (and fails again)
    assert second.exit_code == 1, second.output
    assert "1 finished earlier, 1 failed" in second.output


def test_other_settings_refused(ray_session, inputs, fleet):
    _, out, _ = fleet
    result = CliRunner().invoke(
        app,
        ["infer", str(inputs["model"]), str(inputs["video"]), "--out", str(out), "--no-overlay", "--ray"]
        + [x for t in fd.TOPICS for x in ("--topic", t)],
    )
    assert result.exit_code == 2 and "other settings (overlays)" in result.output


def _sessions_alive(sid: int) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    alive.append(int(entry.name))
            except OSError:
                continue
    return alive


def test_killed_run_then_rerun_gives_the_same_result(ray_session, inputs, single, tmp_path):
    """SIGKILL a run (driver and its local Ray cluster) after its first finished shard; the
    outputs on disk are whole shards only; a re-run finishes with the single-machine result."""
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        from runtime.io.fleet import segment
        segment({str(inputs["model"])!r}, [{str(inputs["images"])!r}, {str(inputs["video"])!r}],
                {str(out)!r}, workers=1, batch=1, images_per_shard=1)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    done_at_kill = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            try:
                shards = json.loads((out / MANIFEST).read_text())["shards"]
            except (OSError, ValueError):
                shards = {}
            if any(s["status"] == "done" for s in shards.values()):
                os.killpg(child.pid, signal.SIGKILL)
                done_at_kill = sum(s["status"] == "done" for s in shards.values())
                break
            time.sleep(0.01)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert done_at_kill is not None and done_at_kill < 8, "the run finished before it could be killed"
    for _ in range(50):  # the cluster's processes die with the session
        if not _sessions_alive(child.pid):
            break
        time.sleep(0.1)
    assert not _sessions_alive(child.pid)
    for folder in [out / "clip.avi", *(out / "cam").glob("part-*")]:
        if folder.exists():  # only whole shards were renamed into place
            assert (folder / SHARD_MARKER).is_file() and (folder / FRAMES).is_file()
    summary = segment(inputs["model"], [inputs["images"], inputs["video"]], out, images_per_shard=1)
    assert summary.failed == () and summary.frames == 13 and summary.resumed >= done_at_kill
    assert not [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]
    merged: dict[str, bytes] = {}
    for part in (out / "cam").iterdir():
        merged.update(_files(part))
    assert merged == _files(single / "images")
    assert [r["frame"] for r in _index(out) if r["kind"] == "images"] == sorted(
        (p.relative_to(inputs["images"]).as_posix() for p in inputs["images"].rglob("*.*")),
    )


def test_without_ray_one_line_says_how_to_install(inputs, tmp_path):
    script = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        from typer.testing import CliRunner
        from cli import app
        result = CliRunner().invoke(app, ["infer", *sys.argv[1:]])
        sys.stdout.write(result.output)
        sys.exit(result.exit_code)
        """
    )
    args = [str(inputs["model"]), str(inputs["video"]), "--out", str(tmp_path / "out"), "--ray"]
    run = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and "pip install 'pem-deploy[fleet]'" in lines[0], run.stdout
    assert not (tmp_path / "out").exists()


def test_plan_shards_list_files_and_names(inputs, tmp_path):
    (tmp_path / "x").mkdir()
    twin = fd.write_video(tmp_path / "x" / "clip.avi", 2, 9)
    shards = plan_shards([inputs["list"], inputs["video"], twin, inputs["images"]], fd.TOPICS, 4)
    kinds = [(s.kind, s.output) for s in shards]
    assert kinds[0] == ("bag", inputs["bags"][2].name)
    assert [k for k, _ in kinds] == ["bag", "video", "video", "images", "images"]  # clip.avi listed once
    assert len({o for _, o in kinds}) == 5 and all(o.startswith("clip.avi-") for _, o in kinds[1:3])
    assert [s.names for s in shards[3:]] == [
        ("a/img01.png", "a/img03.jpg", "a/img05.png", "img00.jpg"),
        ("img02.png", "img04.png", "img06.jpg"),
    ]
    with pytest.raises(Exception, match="not a bag"):
        plan_shards([inputs["model"]])
    with pytest.raises(Exception, match="--topic"):
        plan_shards([inputs["bags"][0]])


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("local", True),
        ("auto", True),
        ("ray://head:10001", True),
        ("10.0.0.1:6379", True),
        ("drive.mcap", False),
    ],
)
def test_ray_address_forms(address, ok):
    assert looks_like_address(address) is ok


def test_run_shard_skips_an_unreadable_image_and_records_it(inputs, tmp_path):
    """One shard without Ray: an unreadable file of a folder slice is a row with its error (as
    ``infer`` skips it), the others are segmented, and the shard folder appears whole."""
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "cam"
    fd.write_images(folder, 3, 7)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    names = tuple(sorted(p.name for p in folder.rglob("*.*") if p.parent == folder))
    shard = plan_shards([folder], images_per_shard=10)[0]
    assert set(names) <= set(shard.names)
    out = tmp_path / "out"
    out.mkdir()
    counted = []
    with Segmenter.open(inputs["model"]) as segmenter:
        outcome = run_shard(segmenter, shard, out, batch=2, on_frames=counted.append)
    assert outcome["status"] == "done" and outcome["frames"] == 3 and outcome["skipped"] == 1
    assert sum(counted) == 3
    rows = pq.read_table(out / shard.output / FRAMES).to_pylist()
    assert [r["index"] for r in rows] == list(range(4))
    bad = [r for r in rows if r["error"] is not None]
    assert [r["frame"] for r in bad] == ["broken.png"] and "broken.png" in bad[0]["error"]
    assert bad[0]["output"] is None and bad[0]["class_pixels"] is None
    for row in rows:
        if row["error"] is None:
            assert (out / row["output"]).is_file()
    assert not (out / shard.output / "labels" / "broken.png.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--workers: only with --ray"),
        (["--keep-uncertain", "0.1"], "--keep-uncertain: only with --ray"),
        ([], "2 inputs given; one at a time, or several with --ray"),
    ],
)
def test_several_inputs_and_fleet_options_need_ray(inputs, tmp_path, extra, message):
    sources = [str(inputs["video"]), str(inputs["images"])] if not extra else [str(inputs["video"])]
    result = CliRunner().invoke(
        app, ["infer", str(inputs["model"]), *sources, "--out", str(tmp_path / "out"), *extra]
    )
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_ray_address_that_is_an_input_is_refused(inputs, tmp_path):
    args = [str(inputs["model"]), str(inputs["video"]), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, ["infer", *args, "--ray", str(inputs["images"])])
    assert result.exit_code == 2 and "not a Ray address" in result.output
    assert "put --ray after the inputs" in result.output


def test_shard_renamed_but_not_recorded_counts_as_finished(ray_session, inputs, tmp_path):
    """A kill between a shard's rename and the manifest's update: the next run finds the shard
    folder (ours, same shard) and does not segment it again."""
    out = tmp_path / "out"
    first = segment(inputs["model"], [inputs["video"]], out)
    assert first.frames == 6
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"] = {}
    (out / MANIFEST).write_text(json.dumps(manifest))
    before = (out / "clip.avi" / FRAMES).stat().st_mtime_ns
    second = segment(inputs["model"], [inputs["video"]], out)
    assert second.resumed == 1 and second.frames == 6 and second.failed == ()
    assert (out / "clip.avi" / FRAMES).stat().st_mtime_ns == before  # not written again
    assert json.loads((out / MANIFEST).read_text())["shards"][str(inputs["video"])]["status"] == "done"


def test_keep_uncertain_refused_before_any_work_without_margins(ray_session, inputs, tmp_path):
    from tests.helpers.runtime_models import semantic_model, write_artifact

    (tmp_path / "m").mkdir()
    model = write_artifact(tmp_path / "m", semantic_model(32, 64))  # labels only: no margins
    with pytest.raises(InputError, match="only 'raw' head artifacts"):
        segment(model, [inputs["video"]], tmp_path / "out", keep_uncertain=0.1)
    assert not (tmp_path / "out").exists()


def test_progress_printer_shows_state_lines_off_a_terminal():
    import io

    stream = io.StringIO()
    printer = ProgressPrinter(stream, every=0.0)
    printer.show(FleetProgress(frames=3, total=9, shards_done=1, shards_total=3, seconds=1.5))
    printer.finish()
    lines = stream.getvalue().splitlines()
    expected = "3/9 frames  2.0 FPS  shards 1/3 done, 0 failed"
    assert lines == [expected, expected]  # the due line, then the final state


def test_the_host_process_gets_its_print_back(ray_session, inputs, tmp_path):
    """Ray's driver swaps ``builtins.print`` for its progress-bar-safe one once workers log (seen
    when a later test pickled ``print`` and got Ray's function); the run restores the host's."""
    before = builtins.print

    def swap_print_as_ray_does(state) -> None:
        builtins.print = lambda *args, **kwargs: None

    try:
        segment(
            inputs["model"], [inputs["video"]], tmp_path / "out", progress=swap_print_as_ray_does, every=0.2
        )
        assert builtins.print is before
    finally:
        builtins.print = before
