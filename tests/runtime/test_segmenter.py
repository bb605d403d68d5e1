"""Segmenter plumbing on small hand-built ONNX models (no torch: built with onnx.helper)."""

import json
import sys

import cv2
import numpy as np
import pytest

from contract.output import MANIFEST_NAME
from runtime import ArtifactError, InputError, Segmenter, load_artifact
from runtime.io.batch_infer import infer_path
from tests.helpers.concurrency import run_in_threads
from tests.helpers.runtime_models import (
    constant_panoptic_artifact,
    scene,
    semantic_model,
    sidecar_for,
    write_artifact,
)


def test_runtime_never_imports_torch(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import runtime, runtime.core.segmenter, runtime.io.batch_infer\n"
        "import runtime.core.backends.onnxruntime_backend\n"
        "import runtime.core.backends.tensorrt_backend\n"
        f"s = runtime.Segmenter.open({str(write_artifact(tmp_path, semantic_model(32, 64)))!r})\n"
        "import numpy as np; print(s.predict(np.zeros((10, 10, 3), np.uint8)).labels.shape)\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(10, 10)"


def test_semantic_prediction_at_original_size(tmp_path):
    seg = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64)))
    result = seg.predict(scene())
    assert result.labels.shape == (48, 80) and result.labels.dtype == np.int32
    assert (result.labels[:, :38] == 0).all() and (result.labels[:, 42:] == 2).all()
    assert set(result.timings) == {"pre", "infer", "post", "h2d", "compute", "d2h"}
    assert result.timings["h2d"] == result.timings["d2h"] == 0.0  # CPU provider: no copies
    letterboxed = Segmenter.open(
        write_artifact(tmp_path, semantic_model(32, 64)), resize="letterbox"
    ).predict(scene(80, 48))
    assert letterboxed.labels.shape == (80, 48)
    rgb = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64)), input_color="RGB").predict(scene())
    assert (rgb.labels[:, :38] == 2).all()  # the same array read as RGB swaps red and blue


def test_batches_static_and_dynamic(tmp_path):
    static = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64)))
    results = static.predict_batch([scene(), scene(20, 30), scene(64, 64)])
    assert [r.labels.shape for r in results] == [(48, 80), (20, 30), (64, 64)]
    dynamic = Segmenter.open(
        write_artifact(tmp_path, semantic_model(32, 64, batch="N"), shape=("N", 3, 32, 64))
    )
    assert dynamic.artifact.batch is None
    results = dynamic.predict_batch([scene(), scene()])
    assert all(np.array_equal(r.labels, results[0].labels) for r in results)


def test_threads_share_one_segmenter(tmp_path):
    seg = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64)))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 70, 3), dtype=np.uint8) for _ in range(8)]
    expected = [seg.predict(img).labels for img in images]
    failures = []

    def work(offset: int) -> None:
        for step in range(20):
            i = (offset + step) % len(images)
            if not np.array_equal(seg.predict(images[i]).labels, expected[i]):
                failures.append(i)

    run_in_threads(work, 4)
    assert failures == []


def test_panoptic_head_fusion(tmp_path):
    """A fixed panoptic model: two queries, stuff 'road' everywhere but the right part, a 'car' there."""
    seg = Segmenter.open(constant_panoptic_artifact(tmp_path))
    result = seg.predict(np.zeros((64, 128, 3), np.uint8))
    assert [(s.category_id, s.isthing) for s in result.segments] == [(0, False), (2, True)]
    assert result.panoptic.shape == (64, 128)
    assert (result.labels[:, :78] == 0).all() and (result.labels[:, 82:] == 2).all()
    # Areas are counted in the returned (original-size) id map, not at the model's input size.
    for segment in result.segments:
        assert segment.area == int((result.panoptic == segment.id).sum())
    bigger = seg.predict(np.zeros((128, 256, 3), np.uint8))
    assert [s.area for s in bigger.segments] == [4 * s.area for s in result.segments]
    out = infer_path(seg, _save(tmp_path / "in.png", np.zeros((64, 128, 3), np.uint8)), tmp_path / "out")
    data = json.loads((out.out_dir / "predictions.json").read_text())
    assert [s["category"] for s in data["predictions"][0]["segments"]] == ["road", "car"]
    assert cv2.imread(str(out.out_dir / "panoptic" / "in.png.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def _save(path, image):
    cv2.imwrite(str(path), image)
    return path


def test_infer_folder_and_video_write_atomically(tmp_path):
    seg = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64)))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        _save(folder / f"f{i}.png", scene())
    summary = infer_path(seg, folder, tmp_path / "out")
    assert summary.frames == 3
    labels = cv2.imread(str(tmp_path / "out" / "labels" / "f1.png.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (48, 80) and labels[0, 0] == 0 and labels[0, -1] == 2
    assert (tmp_path / "out" / "overlay" / "f2.png.jpg").is_file()
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (80, 48))
    for _ in range(4):
        writer.write(scene())
    writer.release()
    assert infer_path(seg, video, tmp_path / "vid").frames == 4
    # A corrupt file in a folder: strict -> one-line error naming it, the previous output untouched.
    (folder / "f9.png").write_bytes(b"broken")
    with pytest.raises(InputError, match="f9.png: not an image"):
        infer_path(seg, folder, tmp_path / "out", exist_ok=True, strict=True)
    names = ["f0.png.png", "f1.png.png", "f2.png.png"]
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == names
    listing = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert listing == [MANIFEST_NAME, "labels", "overlay", "predictions.json"]
    # Not strict: the corrupt file is skipped and reported; the others are written.
    skipped: list[str] = []
    summary = infer_path(seg, folder, tmp_path / "out", exist_ok=True, on_skip=skipped.append)
    assert summary.frames == 3 and [n for n, _ in summary.failed] == ["f9.png"] and len(skipped) == 1


def test_artifact_errors(tmp_path):
    path = write_artifact(tmp_path, semantic_model(32, 64))
    with pytest.raises(ArtifactError, match="no such model file"):
        load_artifact(tmp_path / "absent.onnx")
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ArtifactError, match="checksum does not match"):
        load_artifact(path)
    path = write_artifact(tmp_path, semantic_model(32, 64))
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"model\.json: not a valid JSON sidecar"):
        load_artifact(path)
    path = write_artifact(tmp_path, semantic_model(32, 64), head="panoptic")
    with pytest.raises(ArtifactError, match="model.json: outputs lacks output"):
        Segmenter.open(path)
    path = write_artifact(tmp_path, semantic_model(32, 64))
    path.with_suffix(".json").unlink()
    with pytest.raises(ArtifactError, match="sidecar model.json is missing"):
        Segmenter.open(path)
    bad = tmp_path / "m2.onnx"
    bad.write_bytes(b"garbage")
    bad.with_suffix(".json").write_text(json.dumps(sidecar_for(semantic_model(32, 64))))
    with pytest.raises(ArtifactError, match="onnxruntime cannot load"):
        Segmenter.open(bad)


def test_runtime_sources_compile_on_python_310():
    """JetPack 6 ships Python 3.10: the runtime must not use newer syntax."""
    import shutil
    import subprocess
    from pathlib import Path

    candidates = [
        shutil.which("python3.10"),
        *map(str, Path.home().glob(".pyenv/versions/3.10*/bin/python3.10")),
    ]
    working = [c for c in candidates if c and subprocess.run([c, "-V"], capture_output=True).returncode == 0]
    if not working:
        pytest.skip("no python3.10 interpreter on this machine")
    python310 = working[0]
    files = [str(p) for p in (Path(__file__).parents[2] / "runtime").rglob("*.py")]
    code = "import sys, ast\nfor f in sys.argv[1:]:\n    ast.parse(open(f).read(), f)\n"
    out = subprocess.run([python310, "-c", code, *files], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_infer_cli(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    model = write_artifact(tmp_path, semantic_model(32, 64))
    image = _save(tmp_path / "scene.png", scene())
    runner = CliRunner()
    result = runner.invoke(app, ["infer", str(model), str(image), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "1 frame(s)" in result.output and (tmp_path / "o" / "labels" / "scene.png.png").is_file()
    for args, message in [
        ([str(model), str(tmp_path / "nope.png")], "nope.png: no such file or folder"),
        ([str(tmp_path / "x.onnx"), str(image)], "x.onnx: no such model file"),
        ([str(model), str(image), "--resize", "crop"], "--resize must be"),
    ]:
        result = runner.invoke(app, ["infer", *args, "--out", str(tmp_path / "o2")])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists()
