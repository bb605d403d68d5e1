"""Hostile image files through ``pem-deploy infer`` (runtime.io.images): each refused with one line, or
accepted with label PNGs identical to what the API gives for ``cv2.imread`` of the same file.
"""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest

from runtime import InputError
from runtime.io.images import load_image
from tests.helpers.cli import assert_one_line_error
from tests.helpers.hostile_inputs import (
    PNG,
    big_png_declaring,
    bmp_header,
    color_image,
    encode,
    exif_jpeg,
    invoke_cli,
    jpeg_with_size,
    palette_png,
    png_chunk,
    png_raw,
    read_labels,
    rng,
    tiff_header,
    webp_vp8x,
)
from tests.helpers.runtime_models import scene

# -- image files through the CLI: refused with one line --------------------------------------

_JPEG = encode(".jpg", color_image())
_BMP = encode(".bmp", color_image())
_TIFF = encode(".tif", color_image())
_WEBP = encode(".webp", color_image())
_PPM = encode(".ppm", color_image())

REFUSED_FILES: dict[str, tuple[str, bytes, str]] = {
    "zero-byte png": ("a.png", b"", "file is empty"),
    "text named png": ("a.png", b"hello, I am text\n" * 10, "not an image"),
    "html named jpg": ("a.jpg", b"<html><body>404</body></html>", "not an image"),
    "random bytes bmp": ("a.bmp", rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes(), "not an image"),
    "zeros named webp": ("a.webp", b"\x00" * 4096, "not an image"),
    "float32 tiff": ("f.tif", encode(".tif", rng(2).random((8, 8, 3)).astype(np.float32)), "float samples"),
    "int32 tiff": ("i.tif", tiff_header(8, 8, 32, 1, 2), "32-bit int samples"),
    "float64 tiff": ("d.tif", tiff_header(8, 8, 64, 1, 3), "64-bit float samples"),
    "png declares 65535x65535 (1 MB)": (
        "big.png",
        big_png_declaring(65535, 65535, 1 << 20),
        "image is 65535x65535 = 4294836225 pixels, over the limit of 100000000 (raise it with "
        "PEM_DEPLOY_MAX_PIXELS",
    ),
    "png declares 20000x20000": ("b.png", big_png_declaring(20000, 20000, 10), "over the limit"),
    "png declares 0x10": ("z.png", big_png_declaring(0, 10, 10), "empty 0x10 image"),
    "jpeg declares 65500x65500": ("big.jpg", jpeg_with_size(65500, 65500), "65500x65500"),
    "jpeg declares 0 width": ("z.jpg", jpeg_with_size(0, 8), "empty 0x8 image"),
    "bmp declares 100000x100000": ("big.bmp", bmp_header(100000, 100000), "100000x100000"),
    "bmp top-down declares huge": ("td.bmp", bmp_header(30000, -30000), "30000x30000"),
    "tiff declares 70000x70000": ("big.tif", tiff_header(70000, 70000), "70000x70000"),
    "webp declares 16384x16384": ("big.webp", webp_vp8x(16384, 16384), "16384x16384"),
    "ppm declares 20000x20000": ("big.ppm", b"P6\n20000 20000\n255\n" + b"\x00" * 100, "20000x20000"),
    "pgm with bad maxval": ("m.pgm", b"P5\n4 4\n70000\n" + b"\x00" * 32, "maxval"),
    "pgm without size": ("n.pgm", b"P5\n#only a comment\n", "corrupt PNM header"),
    "png with broken IHDR type": ("c.png", png_raw(4, 4, 8, 7, b"\x00" * 20), "invalid colour type"),
    "png without IDAT": (
        "e.png",
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
        + png_chunk(b"IEND", b""),
        "no IDAT",
    ),
    "png with corrupt IDAT": (
        "d.png",
        png_raw(4, 4, 8, 2, b"\x00" * 52)[:-30] + b"\x00" * 18 + PNG[-12:],
        "",
    ),
    "bigtiff": ("b.tif", b"II+\x00\x08\x00\x00\x00" + b"\x00" * 40, "BigTIFF"),
    "jpeg without frame header": ("s.jpg", b"\xff\xd8\xff\xda\x00\x02\xff\xd9", "no frame header"),
}
for _offset in (4, 8, 12, 20, 33, 40, len(PNG) // 2, len(PNG) - 12, len(PNG) - 1):
    _msg = "not an image" if _offset < 8 else "truncated"
    REFUSED_FILES[f"png truncated at {_offset}"] = ("t.png", PNG[:_offset], _msg)
for _offset in (3, 10, 30, 100, len(_JPEG) // 2, len(_JPEG) - 2, len(_JPEG) - 1):
    REFUSED_FILES[f"jpeg truncated at {_offset}"] = ("t.jpg", _JPEG[:_offset], "truncated")
for _label, (_name, _data) in {
    "bmp": ("t.bmp", _BMP),
    "tiff": ("t.tif", _TIFF),
    "webp": ("t.webp", _WEBP),
    "ppm": ("t.ppm", _PPM),
}.items():
    REFUSED_FILES[f"{_label} truncated at half"] = (_name, _data[: len(_data) // 2], "truncated")
    REFUSED_FILES[f"{_label} truncated at 20"] = (_name, _data[:20], "")


@pytest.mark.parametrize("case", sorted(REFUSED_FILES))
def test_refused_image_file(case, model, tmp_path):
    name, data, message = REFUSED_FILES[case]
    path = tmp_path / name
    path.write_bytes(data)
    result = invoke_cli(["infer", str(model), str(path), "--out", str(tmp_path / "out")])
    assert_one_line_error(result, message)
    assert str(path) in result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError):
        load_image(path)


# -- image files through the CLI: accepted, identical to the API on cv2.imread -----------------


def _gray(h=9, w=13, dtype=np.uint8):
    return rng(3).integers(0, np.iinfo(dtype).max, (h, w), dtype=dtype)


ACCEPTED_FILES: dict[str, tuple[str, bytes, str]] = {
    "png rgb": ("a.png", PNG, ""),
    "jpeg": ("a.jpg", _JPEG, ""),
    "bmp": ("a.bmp", _BMP, ""),
    "tiff": ("a.tif", _TIFF, ""),
    "webp": ("a.webp", _WEBP, ""),
    "webp lossy": ("l.webp", encode(".webp", color_image(), [cv2.IMWRITE_WEBP_QUALITY, 80]), ""),
    "ppm": ("a.ppm", _PPM, ""),
    "pgm": ("a.pgm", encode(".pgm", _gray()), "grayscale replicated"),
    "pgm 16-bit": ("w.pgm", encode(".pgm", _gray(dtype=np.uint16)), "16-bit values scaled"),
    "png 1x1": ("one.png", encode(".png", color_image(1, 1)), ""),
    "jpeg 1x1": ("one.jpg", encode(".jpg", color_image(1, 1)), ""),
    "png 1x999": ("row.png", encode(".png", color_image(1, 999)), ""),
    "png 999x1": ("col.png", encode(".png", color_image(999, 1)), ""),
    "png 3x7": ("odd.png", encode(".png", color_image(3, 7)), ""),
    "jpeg 33x65": ("odd.jpg", encode(".jpg", color_image(33, 65)), ""),
    "bmp 5x3": ("odd.bmp", encode(".bmp", color_image(5, 3)), ""),
    "png gray": ("g.png", encode(".png", _gray()), "grayscale replicated to 3 channels"),
    "png gray 16-bit": ("g16.png", encode(".png", _gray(dtype=np.uint16)), "16-bit values scaled to 8-bit"),
    "png rgb 16-bit": (
        "c16.png",
        encode(".png", rng(4).integers(0, 65535, (9, 13, 3), dtype=np.uint16)),
        "16-bit values scaled",
    ),
    "png rgba": ("a4.png", encode(".png", rng(5).integers(0, 256, (9, 13, 4), dtype=np.uint8)), "alpha"),
    "png rgba 16-bit": (
        "a16.png",
        encode(".png", rng(6).integers(0, 65535, (9, 13, 4), dtype=np.uint16)),
        "alpha channel dropped, 16-bit",
    ),
    "png gray+alpha": (
        "ga.png",
        png_raw(5, 4, 8, 4, b"".join(b"\x00" + bytes(range(10)) for _ in range(4))),
        "grayscale replicated to 3 channels, alpha channel dropped",
    ),
    "png 1-bit gray": ("bit.png", png_raw(16, 2, 1, 0, b"\x00\xaa\x55\x00\xff\x0f"), "grayscale"),
    "png palette": ("p.png", palette_png(False), ""),
    "png palette with tRNS": ("pt.png", palette_png(True), "alpha channel dropped"),
    "tiff gray": ("g.tif", encode(".tif", _gray()), "grayscale"),
    "tiff gray 16-bit": ("g16.tif", encode(".tif", _gray(dtype=np.uint16)), "16-bit"),
    "tiff rgba": ("a.tif", encode(".tif", rng(7).integers(0, 256, (9, 13, 4), dtype=np.uint8)), "alpha"),
    "webp rgba": ("a4.webp", encode(".webp", rng(8).integers(0, 256, (9, 13, 4), dtype=np.uint8)), "alpha"),
    "png content named .jpg": ("misnamed.jpg", PNG, ""),
    "jpeg content named .png": ("misnamed.png", _JPEG, ""),
    "bmp 8-bit gray palette": ("g.bmp", encode(".bmp", _gray()), ""),
    "jpeg gray": ("g.jpg", encode(".jpg", _gray()), "grayscale"),
    "jpeg progressive": ("p.jpg", encode(".jpg", color_image(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), ""),
    "jpeg with trailing bytes": ("tail.jpg", _JPEG + b"\x00" * 64, ""),
}
for _o in range(1, 9):
    ACCEPTED_FILES[f"jpeg exif orientation {_o}"] = (
        f"exif{_o}.jpg",
        exif_jpeg(_o),
        "" if _o == 1 else f"EXIF orientation {_o} applied",
    )


@pytest.mark.parametrize("case", sorted(ACCEPTED_FILES))
def test_accepted_image_file(case, model, seg, tmp_path):
    name, data, note = ACCEPTED_FILES[case]
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "out"
    result = invoke_cli(["infer", str(model), str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("1 frame(s) -> ")
    notes = [line for line in lines if line.startswith("note: ")]
    assert (note in notes[0] and len(notes) == 1) if note else notes == [], result.output
    expected = cv2.imread(str(path))  # what an API user would pass
    assert expected is not None
    labels = read_labels(out / "labels" / f"{name}.png")
    assert labels.shape == expected.shape[:2]
    np.testing.assert_array_equal(labels, seg.predict(expected).labels)
    assert (out / "overlay" / f"{name}.jpg").is_file()
    record = json.loads((out / "predictions.json").read_text())["predictions"][0]
    assert record["name"] == name and record["outputs"]["labels"] == f"labels/{name}.png"


def test_exif_orientation_agrees_with_cv2_imread(seg, tmp_path):
    """Orientation 6 (rotate 90 cw): the CLI's output is portrait, like cv2.imread's image."""
    path = tmp_path / "rot.jpg"
    path.write_bytes(exif_jpeg(6, scene(20, 40)))
    loaded = load_image(path)
    assert loaded.image.shape == (40, 20, 3) == cv2.imread(str(path)).shape
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (20, 40, 3)  # the raw pixels
    labels = seg.predict(cv2.imread(str(path))).labels
    # Rotated 90 degrees clockwise: the red left half (class 0) is now the top half.
    assert labels.shape == (40, 20) and (labels[:18] == 0).all() and (labels[22:] == 2).all()
