"""Pipelined ``Segmenter.stream``: same results as sequential calls, in order, errors surfaced on
the caller's thread, bounded read-ahead, and no thread left behind after an early close."""

import threading
import time

import numpy as np
import pytest

from runtime import InputError, Segmenter
from runtime.core.backends.base import Backend
from tests.helpers.runtime_models import semantic_model, write_artifact


def _stream_threads():
    return [t for t in threading.enumerate() if t.name.startswith("pem-stream-") and t.is_alive()]


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (int(rng.integers(20, 60)), int(rng.integers(30, 90)), 3), np.uint8)
        for _ in range(n)
    ]


@pytest.fixture
def seg(tmp_path):
    with Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64))) as s:
        yield s


def test_pipelined_equals_sequential_in_order(seg):
    frames = [*_frames(25), np.full((20, 30), 200, np.uint8)]  # the last one grayscale: a note
    sequential = list(seg.stream(frames, pipelined=False))
    pipelined = list(seg.stream(iter(frames), queue_size=1))
    assert len(pipelined) == len(frames)
    for got, want in zip(pipelined, sequential):
        np.testing.assert_array_equal(got.labels, want.labels)
        assert got.notes == want.notes and set(got.timings) == {"pre", "infer", "post"}
    assert pipelined[-1].notes and not pipelined[0].notes
    assert _stream_threads() == []


def test_panoptic_stream_equals_predict(tmp_path):
    from tests.helpers.runtime_models import image_panoptic_model as panoptic_model

    seg = Segmenter.open(write_artifact(tmp_path, panoptic_model(32, 64), head="panoptic"))
    frames = _frames(6, seed=1)
    for got, frame in zip(seg.stream(frames), frames):
        want = seg.predict(frame)
        np.testing.assert_array_equal(got.panoptic, want.panoptic)
        assert got.segments == want.segments


def test_errors_surface_on_the_callers_thread_after_earlier_frames(seg):
    def broken_camera():
        yield from _frames(3)
        raise RuntimeError("camera unplugged")

    seen = []
    with pytest.raises(RuntimeError, match="camera unplugged"):
        for result in seg.stream(broken_camera()):
            seen.append(result)
    assert len(seen) == 3
    frames = [*_frames(2), np.zeros((10, 10), np.float32)]  # not an image: refused by validation
    with pytest.raises(InputError, match="frame 2"):
        list(seg.stream(frames))

    class Failing(Backend):
        def __init__(self, inner):
            self._inputs, self._outputs, self.inner, self.calls = inner.inputs, inner.outputs, inner, 0

        def infer(self, inputs):
            self.calls += 1
            if self.calls == 4:
                raise MemoryError("device out of memory")
            return self.inner.infer(inputs)

    failing = Segmenter(seg.artifact, Failing(seg.backend))
    got = []
    with pytest.raises(MemoryError):
        got.extend(failing.stream(_frames(10)))
    assert len(got) == 3

    def interrupted():  # Ctrl-C while reading a frame reaches the caller as KeyboardInterrupt
        yield from _frames(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(seg.stream(interrupted()))
    assert _stream_threads() == []


def test_early_close_joins_threads_and_closes_the_source(seg):
    produced, closed = [], []

    def endless():
        rng = np.random.default_rng(0)
        try:
            while True:
                produced.append(1)
                yield rng.integers(0, 256, (24, 40, 3), np.uint8)
        finally:
            closed.append(True)

    stream = seg.stream(endless(), queue_size=2)
    first = next(stream)
    assert first.labels.shape == (24, 40)
    time.sleep(0.3)  # the pipeline fills its queues, then waits for the consumer (back-pressure)
    assert len(produced) <= 1 + 3 * 2 + 3  # consumed + three queues + one frame in each stage
    assert len(_stream_threads()) == 3
    stream.close()
    assert _stream_threads() == [] and closed == [True]
    for _ in seg.stream(endless()):  # break out of a for loop: same clean-up when collected
        break
    deadline = time.monotonic() + 5
    while _stream_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _stream_threads() == []
    with pytest.raises(ValueError, match="queue_size"):
        seg.stream([], queue_size=0)
