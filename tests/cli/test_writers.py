"""Every writer of pem-deploy against its hostile targets (issue 20, "one output mechanism").

One table, :data:`WRITERS`, lists each command that writes and how to call it; each scenario is
parametrised over it:

- ``foreign``: a folder target holding files pem-deploy did not write is refused unless
  ``--exist-ok``, a foreign file at one of our names is refused unless ``--overwrite``, an
  explicit file target that exists is refused unless ``--overwrite``; nothing foreign changes;
- ``inputs``: a target that is one of the run's own inputs is refused with and without
  ``--exist-ok`` / ``--overwrite``, and the input is unchanged;
- ``full disk`` (a tiny tmpfs) and ``read-only`` (a read-only tmpfs): one line, exit 2, the
  target as it was, no staging and no partial file left;
- ``kill``: SIGKILL while everything is staged (``PEM_DEPLOY_TEST_PAUSE_BEFORE_COMMIT``); the
  target is as it was, and the next run removes the dead run's staging.

Cases that need what this machine may lack (TensorRT for ``build``) or that the demo's minutes
would make slow are skipped with the reason; ``contract/output.py``'s own tests
(tests/contract/test_output.py) cover the mechanism itself on every kind of target.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from cli import app
from contract.fs import PAUSE_ENV, STAGING_PREFIX, staging_pid
from contract.output import MANIFEST_NAME
from tests.helpers.filesystems import read_only_folder, small_disk, tree
from tests.helpers.runtime_models import scene, semantic_model, write_artifact

REPO = Path(__file__).resolve().parents[2]
TINY = "cityscapes-semantic-tiny"


# -- the world every writer reads -------------------------------------------------------------


@dataclass
class World:
    root: Path
    artifact: Path  # folder with model.onnx + model.json
    reference: Path  # a copy (verify passes against it)
    image: Path
    video: Path
    bag: Path | None  # an .mcap file (None without rosbags)
    checkpoint: Path  # model.safetensors + model.json
    data: Path  # synthetic Cityscapes set


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    import torch

    from pem.checkpoint import save_checkpoint
    from pem.config import get_preset
    from pem.data.synthetic import SyntheticConfig, make_synthetic
    from pem.model import PEM

    # One level below the module's own folder: a file target's checks look at its folder's parent
    # too (staging beside a folder target), which must not be pytest's shared base folder, where
    # other modules' SIGKILLed runs legitimately leave staging until a next run writes there.
    root = tmp_path_factory.mktemp("writers") / "world"
    root.mkdir()
    artifact = root / "artifact"
    artifact.mkdir()
    write_artifact(artifact, semantic_model(32, 64))
    reference = root / "reference"
    shutil.copytree(artifact, reference)
    image = root / "scene.png"
    cv2.imwrite(str(image), scene())
    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (80, 48))
    for _ in range(2):
        writer.write(scene())
    writer.release()
    bag = None
    try:
        from rosbags.rosbag2 import StoragePlugin

        from tests.runtime.test_ros_bags import _write_bag

        folder = _write_bag(root / "drive", StoragePlugin.MCAP, frames=2)
        bag = next(Path(folder).glob("*.mcap"))
    except ImportError:
        pass
    torch.manual_seed(0)
    cfg = get_preset(TINY)
    checkpoint = save_checkpoint(PEM(cfg).eval(), cfg, root / "ck" / "model")
    data = make_synthetic(root / "data", SyntheticConfig(train=2, val=1, size=(64, 128), seed=1))
    return World(root, artifact, reference, image, video, bag, checkpoint, data)


# -- the table of writers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Writer:
    """A command that writes: ``argv(world, target)``; ``kind`` folder or file (an explicit file
    target); ``ours`` a name it writes inside a folder target (collision case); ``onto_input``
    a target that is one of its own inputs (None: it reads no user file); ``needs`` a reason to
    skip the cases that run it to the end on this machine (None: it can)."""

    name: str
    kind: str
    argv: Callable[[World, Path], list[str]]
    ours: str | None = None
    onto_input: Callable[[World], Path] | None = None
    exist_ok: bool = True  # the command has --exist-ok (folder writers)
    overwrite: bool = True  # the command has --overwrite
    needs: Callable[[World], str | None] = lambda w: None
    slow: bool = False  # minutes: only its fast (refused-at-entry) cases run


def _infer(source: Callable[[World], Path]) -> Callable[[World, Path], list[str]]:
    return lambda w, t: ["infer", str(w.artifact), str(source(w)), "--out", str(t)]


def _bag_argv(w: World, t: Path) -> list[str]:
    return ["infer", str(w.artifact), str(w.bag), "--topic", "/front/image_raw", "--out", str(t)]


def _eval(w: World, *extra: str) -> list[str]:
    return ["eval", "--checkpoint", str(w.checkpoint), "--data", str(w.data), "--limit", "1", *extra]


def _verify(w: World, *extra: str) -> list[str]:
    return [
        "verify",
        str(w.artifact),
        "--against",
        str(w.reference),
        "--random",
        "0",
        "--scenes",
        "1",
        *extra,
    ]


def _export(w: World, t: Path, *extra: str) -> list[str]:
    return [
        "export", "--checkpoint", str(w.checkpoint), "--height", "64", "--width", "64",
        "--simplifier", "none", "--exporter", "torchscript", "--out", str(t), *extra,
    ]  # fmt: skip


def _calibrate(w: World, t: Path) -> list[str]:
    return [
        "calibrate", "--checkpoint", str(w.checkpoint), "--height", "64", "--width", "64",
        "--calib-images", "2", "--no-report", "--out", str(t),
    ]  # fmt: skip


def _train(w: World, t: Path) -> list[str]:
    return [
        "train", "--preset", TINY, "--data", str(w.data), "--out", str(t), "--iterations", "1",
        "--batch-size", "2", "--crop", "64x64", "--num-points", "16", "--no-eval", "--threads", "1",
    ]  # fmt: skip


def _no_bag(w: World) -> str | None:
    return None if w.bag is not None else "rosbags is not installed"


def _no_trt(w: World) -> str | None:
    return None if _has_tensorrt() else "TensorRT is not installed: build stops before writing"


WRITERS = [
    Writer("infer-image", "folder", _infer(lambda w: w.image), "predictions.json", lambda w: w.image),
    Writer("infer-video", "folder", _infer(lambda w: w.video), "predictions.json", lambda w: w.video),
    Writer("infer-bag", "file", _bag_argv, onto_input=lambda w: w.bag, needs=_no_bag),  # type: ignore[arg-type,return-value]
    Writer(  # the bag given as its folder (metadata.yaml + storage), images out to a folder
        "infer-bag-to-folder",
        "folder",
        lambda w, t: [
            "infer",
            str(w.artifact),
            str(w.bag.parent),
            "--topic",
            "/front/image_raw",
            "--out",
            str(t),
        ],  # type: ignore[union-attr]
        "predictions.json",
        onto_input=lambda w: w.bag.parent,  # type: ignore[union-attr]
        needs=_no_bag,
    ),
    Writer(  # a stream (the camera path): a file:// URL read frame by frame
        "infer-stream",
        "folder",
        lambda w, t: ["infer", str(w.artifact), f"file://{w.video}", "--max-frames", "2", "--out", str(t)],
        "predictions.json",
        onto_input=lambda w: w.video,
    ),
    Writer(
        "bench",
        "folder",
        lambda w, t: [
            "bench",
            str(w.artifact / "model.onnx"),
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--out",
            str(t),
        ],
        "bench.json",
        # an artifact named bench.onnx: its sidecar is bench.json, a name bench writes
        onto_input=lambda w: _bench_named_artifact(w),
    ),
    Writer(
        "eval-json",
        "file",
        lambda w, t: _eval(w, "--json", str(t)),
        onto_input=lambda w: w.checkpoint.with_suffix(".json"),
    ),
    Writer(
        "eval-predictions",
        "folder",
        lambda w, t: _eval(w, "--save-predictions", str(t)),
        onto_input=lambda w: w.data / "gtFine",
    ),
    Writer(
        "verify-json",
        "file",
        lambda w, t: _verify(w, "--json", str(t)),
        onto_input=lambda w: w.reference / "model.json",
    ),
    Writer(
        "verify-reference",
        "file",
        lambda w, t: _verify(w, "--save-reference", str(t)),
        onto_input=lambda w: w.artifact / "model.onnx",
    ),
    Writer("export", "folder", _export, "model.onnx", onto_input=lambda w: w.checkpoint.parent),
    Writer("calibrate", "folder", _calibrate, "model.cache", onto_input=lambda w: w.checkpoint.parent),
    Writer(
        "build",
        "folder",
        lambda w, t: ["build", str(w.artifact / "model.onnx"), "--out", str(t)],
        onto_input=lambda w: w.artifact / "model.engine",  # its sidecar would be the ONNX's model.json
        needs=_no_trt,
    ),
    Writer(
        "make-synthetic",
        "folder",
        lambda w, t: ["make-synthetic", str(t), "--train", "1", "--val", "1", "--size", "64x128"],
        exist_ok=False,
        overwrite=False,  # always a new folder
    ),
    # A run folder: a new run refuses the files of an earlier one (--resume continues it).
    Writer("train", "folder", _train, onto_input=lambda w: w.data, overwrite=False),
    Writer(  # a bundle for a consumer (deepstream: an edited model.onnx + model.json among its files)
        "package",
        "folder",
        lambda w, t: ["package", str(w.artifact), "--for", "deepstream", "--out", str(t)],
        "README.md",
        onto_input=lambda w: w.artifact,
    ),
    Writer("demo", "folder", lambda w, t: ["demo", "--quick", "--out", str(t)], "report.md", slow=True),
]
IDS = [w.name for w in WRITERS]


def _bench_named_artifact(w: World) -> Path:
    folder = w.root / "bench-artifact"
    if not folder.exists():
        folder.mkdir()
        shutil.copy(w.artifact / "model.onnx", folder / "bench.onnx")
        text = (w.artifact / "model.json").read_text().replace('"model.onnx"', '"bench.onnx"')
        (folder / "bench.json").write_text(text)
    return folder


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def _one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _succeeded(result) -> None:
    assert result.exit_code == 0, result.output


def _no_staging(*folders: Path) -> None:
    for folder in folders:
        if folder.exists():
            left = [p for p in folder.rglob("*") if p.name.startswith(STAGING_PREFIX)]
            assert not left, left


def _skip_unless_runnable(writer: Writer, world: World) -> None:
    reason = writer.needs(world)
    if reason:
        pytest.skip(reason)
    if writer.slow:
        pytest.skip(f"{writer.name} takes minutes; its fast cases and tests/workflows/test_demo.py cover it")


def _target(writer: Writer, base: Path) -> Path:
    suffix = {"infer-bag": ".mcap", "verify-reference": ".npz"}.get(writer.name, ".json")
    return base / ("out" if writer.kind == "folder" else f"out{suffix}")


# -- 1. targets holding files pem-deploy did not write ---------------------------------------


@pytest.mark.parametrize("writer", WRITERS, ids=IDS)
def test_foreign_files_are_never_replaced(writer: Writer, world: World, tmp_path: Path) -> None:
    if writer.needs(world) and writer.name != "build":
        pytest.skip(writer.needs(world) or "")
    target = _target(writer, tmp_path)
    if writer.kind == "file":
        target.write_bytes(b"the user's file")
        for flags in ([], ["--exist-ok"] if writer.name == "infer-bag" else []):
            _one_line_error(_invoke([*writer.argv(world, target), *flags]), str(target), "--overwrite")
        assert target.read_bytes() == b"the user's file"
        _succeeded(_invoke([*writer.argv(world, target), "--overwrite"]))  # asked for: replaced
        assert target.read_bytes() != b"the user's file"
        _no_staging(tmp_path)
        return
    (target / "inputs").mkdir(parents=True)
    (target / "inputs" / "photo.jpg").write_bytes(b"a photo")
    (target / "notes.txt").write_text("mine")
    before = tree(target)
    needle = "not an empty directory" if not writer.exist_ok else "--exist-ok"
    _one_line_error(_invoke(writer.argv(world, target)), str(target), needle)
    assert tree(target) == before
    if not writer.exist_ok:
        return
    if writer.ours is not None:  # a foreign file at one of our names: --exist-ok is not enough
        (target / writer.ours).write_bytes(b"the user's own")
        with_ours = tree(target)
        if writer.needs(world) is None:
            _one_line_error(_invoke([*writer.argv(world, target), "--exist-ok"]), writer.ours, "--overwrite")
            assert tree(target) == with_ours
        (target / writer.ours).unlink()
    if writer.needs(world) or writer.slow:
        return
    _succeeded(_invoke([*writer.argv(world, target), "--exist-ok"]))
    after = tree(target)
    assert {k: after.get(k) for k in before} == before  # every foreign file byte for byte
    assert MANIFEST_NAME in after and len(after) > len(before) + 1
    _no_staging(tmp_path)


def test_demo_keeps_the_users_report_and_inputs(world: World, tmp_path: Path) -> None:
    """The issue's case: ``demo --out DIR`` replaced report.md and deleted DIR/inputs/."""
    target = tmp_path / "demo"
    (target / "inputs").mkdir(parents=True)
    (target / "inputs" / "photo.jpg").write_bytes(b"a photo")
    (target / "report.md").write_text("my report")
    before = tree(target)
    _one_line_error(_invoke(["demo", "--quick", "--out", str(target)]), "--exist-ok")
    _one_line_error(
        _invoke(["demo", "--quick", "--out", str(target), "--exist-ok"]), "report.md", "--overwrite"
    )
    assert tree(target) == before


# -- 2. targets that are the run's own inputs -------------------------------------------------


INPUT_WRITERS = [w for w in WRITERS if w.onto_input is not None]


@pytest.mark.parametrize("flags", [[], ["--exist-ok"], ["--overwrite"], ["--exist-ok", "--overwrite"]])
@pytest.mark.parametrize("writer", INPUT_WRITERS, ids=[w.name for w in INPUT_WRITERS])
def test_own_inputs_are_never_written(writer: Writer, flags: list[str], world: World) -> None:
    if writer.name == "infer-bag" and world.bag is None:
        pytest.skip("rosbags is not installed")
    if "--exist-ok" in flags and writer.kind == "file" and writer.name != "infer-bag":
        pytest.skip(f"{writer.name} has no --exist-ok (an explicit file target)")
    if "--overwrite" in flags and not writer.overwrite:
        pytest.skip(f"{writer.name} has no --overwrite")
    assert writer.onto_input is not None
    target = writer.onto_input(world)
    guarded = [target] if target.is_file() else []
    if writer.name == "bench":
        guarded = [target / "bench.json", target / "bench.onnx"]
        argv = [
            "bench",
            str(target / "bench.onnx"),
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--out",
            str(target),
        ]
    elif writer.name in ("build", "package"):
        guarded = [world.artifact / "model.json", world.artifact / "model.onnx"]
        argv = writer.argv(world, target)
    elif writer.name in ("export", "calibrate"):
        guarded = [world.checkpoint, world.checkpoint.with_suffix(".json")]  # NAME.json = the config
        argv = writer.argv(world, target)
    else:
        argv = writer.argv(world, target)
    folder = target if target.is_dir() else target.parent
    before = tree(folder)
    _one_line_error(_invoke([*argv, *flags]), "input")
    after = tree(folder)
    assert after == before, sorted(set(after) ^ set(before))
    assert all(p.exists() for p in guarded)
    _no_staging(folder, folder.parent)


def test_infer_bag_onto_itself_with_exist_ok(world: World) -> None:
    """``infer in.mcap --out in.mcap --exist-ok`` replaced the recording."""
    if world.bag is None:
        pytest.skip("rosbags is not installed")
    data = world.bag.read_bytes()
    for flags in (["--exist-ok"], ["--overwrite"]):
        _one_line_error(_invoke([*_bag_argv(world, world.bag), *flags]), str(world.bag), "input")
    assert world.bag.read_bytes() == data


# -- 3. a full disk and a read-only folder ------------------------------------------------


@pytest.mark.parametrize("writer", WRITERS, ids=IDS)
def test_full_disk(writer: Writer, world: World, tmp_path: Path) -> None:
    _skip_unless_runnable(writer, world)
    with small_disk(tmp_path / "disk", "64k", fill=True) as disk:
        (disk / "keep").mkdir()
        target = _target(writer, disk / "keep")
        before = tree(disk)
        _one_line_error(_invoke(writer.argv(world, target)), "No space left on device")
        assert tree(disk) == before  # the target was not created; nothing partial
        _no_staging(disk)


@pytest.mark.parametrize("writer", WRITERS, ids=IDS)
def test_read_only_folder(writer: Writer, world: World, tmp_path: Path) -> None:
    if writer.needs(world) and writer.name != "build":
        pytest.skip(writer.needs(world) or "")
    with read_only_folder(tmp_path / "ro", {"keep.txt": b"k"}) as ro:
        target = _target(writer, ro)
        _one_line_error(_invoke(writer.argv(world, target)), "Read-only file system")
        if writer.kind == "folder" and writer.exist_ok:  # adding to the existing folder itself
            _one_line_error(_invoke([*writer.argv(world, ro), "--exist-ok"]), "Read-only file system")
        assert tree(ro) == {"keep.txt": b"k"}


# -- 4. killed with everything staged ---------------------------------------------------------

_CLI = "import sys; sys.argv[0] = 'pem-deploy'; import cli; cli.app()"


@pytest.mark.parametrize("writer", WRITERS, ids=IDS)
def test_kill_leaves_the_target_and_the_next_run_cleans_up(
    writer: Writer, world: World, tmp_path: Path
) -> None:
    _skip_unless_runnable(writer, world)
    base = tmp_path / "base"
    base.mkdir()
    (base / "keep.txt").write_text("keep")
    target = _target(writer, base)
    if writer.kind == "file":
        target.write_bytes(b"old")
    before = tree(base)
    argv = writer.argv(world, target) + (["--overwrite"] if writer.kind == "file" else [])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", PAUSE_ENV: "120"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def staged() -> list[Path]:
        return [p for p in base.rglob(f"{STAGING_PREFIX}*") if staging_pid(p.name) == proc.pid]

    try:
        deadline = time.monotonic() + 240
        while not staged() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        # Its staging is complete once it sleeps in the pause: wait until nothing grows.
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert staged(), "no staging of the killed run (the test would prove nothing)"
    left = {k: v for k, v in tree(base).items() if STAGING_PREFIX not in k}
    assert left == before, sorted(set(left) ^ set(before))
    _succeeded(_invoke(argv))  # the next run: it succeeds and removes the dead run's staging
    _no_staging(base)
    assert (base / "keep.txt").read_text() == "keep"


def test_the_table_lists_every_writing_command() -> None:
    """A new writing command must join WRITERS (its flags name the outputs)."""
    from typer.main import get_command

    group = get_command(app)
    writing = set()
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        flags = {opt for param in command.params for opt in getattr(param, "opts", [])}
        if flags & {"--out", "--json", "--save-predictions", "--save-reference"} or name == "make-synthetic":
            writing.add(name)
    nowhere = Path("x")
    fake = World(nowhere, nowhere, nowhere, nowhere, nowhere, nowhere, nowhere, nowhere)
    listed = {w.argv(fake, nowhere)[0] for w in WRITERS}
    assert writing == listed, sorted(writing ^ listed)


def test_no_writer_of_the_package_carries_its_own_staging() -> None:
    """The per-command staging copies are gone: renames and tree removals live in contract/."""
    offenders = []
    for package in ("commands", "runtime", "export", "calib", "workflows", "pem"):
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text()
            for needle in ("tempfile.mkdtemp(", "shutil.rmtree(", "os.replace("):
                if needle in text and path.relative_to(REPO).as_posix() not in _ALLOWED_OWN_STAGING:
                    offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not offenders, offenders


# Internal caches and scratch space, not user targets (each with its reason):
_ALLOWED_OWN_STAGING = {
    "pem/data/cityscapes.py",  # the panoptic json inside a staging folder of contract/output.py
    "calib/run.py",  # moves the exported files within its own staging folder
    "runtime/io/ros/bags.py",  # moves the finished bag onto the staged path of contract.output.FileOutput
}
