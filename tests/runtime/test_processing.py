"""Runtime pre/post-processing (numpy + opencv only)."""

import cv2
import numpy as np
import pytest

from runtime.core.image_input import validate_image
from runtime.core.postprocess import (
    colorize_labels,
    colorize_panoptic,
    fuse_panoptic,
    overlay,
    to_original_size,
)
from runtime.core.preprocess import Geometry, InputFormat, Preprocessor
from runtime.errors import InputError
from runtime.io.images import list_images, read_image, write_image


def _image(h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_stretch_normalises_and_converts_bgr_to_rgb():
    fmt = InputFormat(height=32, width=64)
    image = _image(32, 64)
    tensor, geom = Preprocessor(fmt, "stretch", "BGR").one(image)
    assert tensor.shape == (3, 32, 64) and tensor.dtype == np.float32
    expected_r = (image[:, :, 2].astype(np.float32) - 123.675) / 58.395
    np.testing.assert_allclose(tensor[0], expected_r, rtol=1e-6, atol=1e-5)
    assert geom == Geometry(32, 64, 32, 64)


def test_letterbox_keeps_aspect_and_pads_with_zero_after_normalisation():
    fmt = InputFormat(height=64, width=64)
    tensor, geom = Preprocessor(fmt, "letterbox", "RGB").one(_image(20, 40))
    assert (geom.resized_h, geom.resized_w) == (32, 64)
    np.testing.assert_allclose(tensor[:, 32:, :], 0.0, atol=1e-6)


def test_uint8_in_graph_and_batch():
    fmt = InputFormat(height=32, width=32, dtype="uint8", normalize_in_graph=True)
    batch, geoms = Preprocessor(fmt)([_image(10, 20), _image(50, 30, seed=1)])
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.uint8
    assert [g.original_h for g in geoms] == [10, 50]


def test_label_map_back_to_original_size():
    labels = np.zeros((64, 64), np.int64)
    labels[:32, 32:] = 5
    labels[32:] = 9  # padding rows: must be cropped away
    out = to_original_size(labels, Geometry(20, 40, 32, 64))
    assert out.shape == (20, 40)
    assert set(np.unique(out)) == {0, 5}
    assert (out[:, 25:] == 5).all() and (out[:, :15] == 0).all()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((5, 5, 3), np.int16), "int16"),
        (np.zeros((5, 5, 3), np.float32), "float32"),
        (np.zeros((5, 5, 2), np.uint8), "1, 3 or 4 channels"),
        (np.zeros((3, 5, 5), np.uint8), "channels-first"),
    ],
)
def test_bad_arrays_are_rejected_with_the_name(array, message):
    with pytest.raises(InputError, match=message) as err:
        validate_image(array, "frame-7")
    assert str(err.value).startswith("frame-7:") and "\n" not in str(err.value)


def test_huge_image_is_rejected():
    with pytest.raises(InputError, match="over the limit"):
        validate_image(np.zeros((100, 100, 3), np.uint8), "big", max_pixels=5000)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such image file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty.png: file is empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(InputError, match="corrupt.jpg: truncated or corrupt image header"):
        read_image(tmp_path / "corrupt.jpg")
    # Grayscale, RGBA and 16-bit files are accepted as cv2.imread reads them.
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 8), 7, np.uint8))
    assert (read_image(tmp_path / "gray.png") == 7).all()
    cv2.imwrite(str(tmp_path / "rgba.png"), np.full((8, 8, 4), 9, np.uint8))
    assert read_image(tmp_path / "rgba.png").shape == (8, 8, 3)
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((8, 8, 3), 0x1234, np.uint16))
    assert (read_image(tmp_path / "deep.png") == 0x12).all()
    write_image(tmp_path / "ok.png", _image())
    assert read_image(tmp_path / "ok.png").shape == (40, 60, 3)
    assert "ok.png" in [p.name for p in list_images(tmp_path)]
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path / "sub")


def test_fuse_panoptic_rules():
    # Q = 4: stuff 0 twice (merged), thing 1, and one no-object query; K = 2.
    scores = np.array([0.95, 0.9, 0.99, 0.99], np.float32)
    classes = np.array([0, 0, 1, 2], np.int32)
    owner = np.zeros((4, 6), np.int32)
    owner[:2, 3:] = 1
    owner[2:, 3:] = 2
    fg = np.ones((4, 6), bool)
    fg[0, 0] = False
    area = np.array([11, 6, 6, 24], np.int32)
    id_map, segments = fuse_panoptic(scores, classes, owner, fg, area, {1}, num_classes=2)
    assert [(s.id, s.category_id, s.isthing) for s in segments] == [(1, 0, False), (2, 1, True)]
    assert segments[0].area == 11 + 6 and segments[1].area == 6
    assert id_map[0, 0] == 0 and (id_map[:2, 3:] == 1).all() and (id_map[2:, 3:] == 2).all()
    # Overlap rule: a query owning under 80% of its own mask is dropped.
    id_map, segments = fuse_panoptic(scores, classes, owner, fg, np.array([11, 6, 10, 24]), {1}, 2)
    assert [s.category_id for s in segments] == [0] and (id_map[2:, 3:] == 0).all()
    # Nothing confident enough: all void.
    id_map, segments = fuse_panoptic(scores * 0.5, classes, owner, fg, area, {1}, 2)
    assert segments == [] and not id_map.any()


def test_colours_and_overlay():
    palette = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    labels = np.array([[0, 1], [255, 1]])
    color = colorize_labels(labels, palette)
    assert color[0, 0].tolist() == [0, 0, 255]  # BGR
    assert color[1, 0].tolist() == [0, 0, 0]
    blended = overlay(np.full((2, 2, 3), 100, np.uint8), color, 0.5)
    assert blended.shape == (2, 2, 3)
    from runtime.core.postprocess import Segment

    pan = colorize_panoptic(
        np.array([[0, 1], [2, 2]]), [Segment(1, 0, False, 1.0, 1), Segment(2, 1, True, 1.0, 2)], palette
    )
    assert pan[0, 1].tolist() == [0, 0, 255] and pan[0, 0].tolist() == [0, 0, 0]


def test_outline_things_draws_around_each_instance_only():
    from contract.segments import Segment
    from runtime.core.postprocess import outline_things

    ids = np.zeros((12, 20), np.int32)
    ids[2:8, 2:8] = 1  # car 1
    ids[2:8, 8:14] = 2  # car 2, touching car 1
    ids[9:, :] = 3  # road (stuff)
    segments = [
        Segment(1, 13, True, 0.9, 36),
        Segment(2, 13, True, 0.9, 36),
        Segment(3, 0, False, 0.9, 60),
    ]
    image = np.zeros((12, 20, 3), np.uint8)
    drawn = outline_things(image, ids, segments)
    white = drawn.all(axis=2)
    assert white[2, 2] and white[7, 7] and white[2, 8] and white[7, 13]  # both boxes' borders
    assert not white[4, 4] and not white[4, 10]  # interiors untouched
    assert not white[10:].any()  # no outline for stuff
    assert not image.any()  # the input is not modified
