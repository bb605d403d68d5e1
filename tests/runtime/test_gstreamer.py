"""A real GStreamer pipeline (``videotestsrc ! videoconvert ! appsink``) through an OpenCV built with
GStreamer: ``pem-deploy infer`` and :meth:`Segmenter.stream` read it.

PyPI's OpenCV wheels have no GStreamer, Debian's ``python3-opencv`` has; the check therefore runs
in a subprocess of a Python that sees that OpenCV: ``$PEM_DEPLOY_GST_PYTHON`` (CI: a venv on the
system Python with ``--system-site-packages`` plus onnxruntime and typer, see .ci/run), else
``/usr/bin/python3`` when it has all of it. Skips, saying which part is missing, elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.runtime_models import semantic_model, write_artifact

REPO = Path(__file__).resolve().parents[2]
PIPELINE = (
    "videotestsrc num-buffers=12 pattern=smpte ! video/x-raw,width=96,height=64,framerate=30/1 "
    "! videoconvert ! video/x-raw,format=BGR ! appsink"
)
PROBE = (
    "import cv2, onnxruntime, typer; "
    "ok = any('GStreamer' in l and 'YES' in l for l in cv2.getBuildInformation().splitlines()); "
    "print('ok' if ok else 'cv2 ' + cv2.__version__ + ' is built without GStreamer')"
)


def _gst_python() -> str:
    """A Python whose OpenCV has GStreamer and which has the runtime's other imports, or skip."""
    candidates = [os.environ.get("PEM_DEPLOY_GST_PYTHON", ""), "/usr/bin/python3"]
    reasons = []
    for python in filter(None, candidates):
        if not Path(python).exists():
            reasons.append(f"{python}: not found")
            continue
        probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == "ok":
            return python
        reasons.append(f"{python}: {(probe.stdout + probe.stderr).strip().splitlines()[-1:]}")
    if os.environ.get("PEM_DEPLOY_GST_PYTHON"):  # CI promised one: a broken setup must fail, not skip
        pytest.fail(f"PEM_DEPLOY_GST_PYTHON does not work: {'; '.join(reasons)}")
    pytest.skip(
        "no Python with a GStreamer-enabled OpenCV + onnxruntime + typer "
        f"(apt-get install python3-opencv gstreamer1.0-plugins-good; see .ci/run): {'; '.join(reasons)}"
    )


def _run(python: str, args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PEM_DEPLOY_TORCH_FREE="1")
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=300, cwd=tmp, env=env)


STREAM_SCRIPT = """
import json, sys, threading
import numpy as np
from runtime import Segmenter
from runtime.io.sources import camera_frames, camera_spec, gstreamer_available

spec = camera_spec(sys.argv[2])
assert spec.kind == "GStreamer pipeline" and gstreamer_available()
seg = Segmenter.open(sys.argv[1])
frames = [image for _, image in camera_frames(spec, 10, None, threading.Event())]
streamed = list(seg.stream(iter(frames)))
direct = [seg.predict(f).labels for f in frames]
print(json.dumps({
    "frames": len(frames),
    "shape": list(frames[0].shape),
    "same": all(np.array_equal(r.labels, d) for r, d in zip(streamed, direct)),
    "results": len(streamed),
    "classes": sorted(int(c) for c in np.unique(np.concatenate([d.ravel() for d in direct]))),
}))
"""


def test_segmenter_stream_and_infer_on_a_videotestsrc_pipeline(tmp_path):
    python = _gst_python()
    artifact = write_artifact(tmp_path, semantic_model(32, 64))
    stream = _run(python, ["-c", STREAM_SCRIPT, str(artifact), PIPELINE], tmp_path)
    assert stream.returncode == 0, stream.stderr[-3000:]
    report = json.loads(stream.stdout.strip().splitlines()[-1])
    assert report["frames"] == report["results"] == 10 and report["shape"] == [64, 96, 3]
    assert report["same"]
    assert len(report["classes"]) >= 2  # SMPTE colour bars: several dominant channels

    out = tmp_path / "seg"
    infer = _run(
        python,
        ["-m", "cli", "infer", str(artifact), PIPELINE, "--out", str(out), "--max-frames", "5"],
        tmp_path,
    )
    assert infer.returncode == 0, infer.stderr[-3000:]
    labels = sorted((out / "labels").iterdir())
    assert len(labels) == 5, infer.stdout + infer.stderr
    assert "5 frame(s)" in infer.stdout
