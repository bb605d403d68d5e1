"""A generated hostile-input corpus for the runtime's inputs and ``pem-deploy infer --out``.

Every case asserts its exact outcome: either one ``error:`` line, a non-zero exit and no
traceback, or acceptance with correct outputs (label PNGs equal to what the API gives for
``cv2.imread`` of the same file). All data is generated here from fixed seeds; the model is the
tiny hand-built ONNX graph of ``test_runtime_segmenter``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from contract.errors import PemDeployError
from contract.fs import STAGING_PREFIX, staging_pid
from contract.output import LOCK_NAME, MANIFEST_NAME, _Lock
from runtime import InputError, Segmenter
from runtime.core.image_input import prepare_image
from runtime.io.batch_infer import infer_path
from runtime.io.images import load_image
from tests.helpers.concurrency import run_in_threads
from tests.helpers.filesystems import read_only_folder, small_disk
from tests.helpers.runtime_models import scene, semantic_model, write_artifact

ROOT = Path(__file__).parents[2]
RUNNER = CliRunner()


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("model"), semantic_model(32, 64))


@pytest.fixture(scope="module")
def seg(model) -> Segmenter:
    return Segmenter.open(model)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _encode(suffix: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(suffix, image, params or [])
    assert ok
    return buf.tobytes()


def _color(h: int = 24, w: int = 40, seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_raw(width: int, height: int, depth: int, color: int, rows: bytes, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + extra
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _palette_png(transparent: bool) -> bytes:
    h, w = 6, 10
    indices = (np.arange(h * w).reshape(h, w) % 4).astype(np.uint8)
    rows = b"".join(b"\x00" + indices[y].tobytes() for y in range(h))
    extra = _png_chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 90, 90, 90]))
    if transparent:
        extra += _png_chunk(b"tRNS", bytes([0, 128, 255, 255]))
    return _png_raw(w, h, 8, 3, rows, extra)


def _exif_jpeg(orientation: int, image: np.ndarray | None = None) -> bytes:
    """A JPEG with an APP1 Exif segment (big-endian TIFF, one IFD entry: Orientation)."""
    data = _encode(".jpg", image if image is not None else scene(20, 40), [cv2.IMWRITE_JPEG_QUALITY, 95])
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def _tiff_header(width: int, height: int, bits: int = 8, spp: int = 1, sample_format: int = 1) -> bytes:
    entries = [(256, 4, width), (257, 4, height), (258, 3, bits), (277, 3, spp), (339, 3, sample_format)]
    entries += [(273, 4, 8 + 2 + 12 * 7 + 4), (279, 4, 16)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + b"\x00" * 16


def _bmp_header(width: int, height: int, bpp: int = 24) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + dib + b"\x00" * 64


def _webp_vp8x(width: int, height: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + bytes([0, 0, 0, 0])
    chunk += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(_encode(".jpg", _color(8, 8)))
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _big_png_declaring(width: int, height: int, pad: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"tEXt", b"pad\x00" + b"x" * pad)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + _png_chunk(b"IEND", b"")
    )


# -- helpers -------------------------------------------------------------------------------------


def _invoke(args: list[str], env: dict[str, str] | None = None):
    result = RUNNER.invoke(app, args, env=env)
    assert "Traceback" not in result.output, result.output
    return result


def _assert_error(result, message: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0], lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _read_labels(path: Path) -> np.ndarray:
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert labels is not None, path
    return labels


def _no_partial(out: Path) -> None:
    """Nothing half-written: no temp files, every label PNG decodes, staging only if ours."""
    for p in out.rglob("*"):
        assert not p.name.endswith(".tmp") or STAGING_PREFIX in str(p), p
        if p.suffix == ".png" and "labels" in p.parts and STAGING_PREFIX not in str(p):
            assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None, p
        if p.name.startswith(STAGING_PREFIX):  # ours: named with its writer's pid
            assert staging_pid(p.name) is not None, p


# -- 1. image files through the CLI: refused with one line --------------------------------------

_PNG = _encode(".png", _color())
_JPEG = _encode(".jpg", _color())
_BMP = _encode(".bmp", _color())
_TIFF = _encode(".tif", _color())
_WEBP = _encode(".webp", _color())
_PPM = _encode(".ppm", _color())

REFUSED_FILES: dict[str, tuple[str, bytes, str]] = {
    "zero-byte png": ("a.png", b"", "file is empty"),
    "text named png": ("a.png", b"hello, I am text\n" * 10, "not an image"),
    "html named jpg": ("a.jpg", b"<html><body>404</body></html>", "not an image"),
    "random bytes bmp": ("a.bmp", _rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes(), "not an image"),
    "zeros named webp": ("a.webp", b"\x00" * 4096, "not an image"),
    "float32 tiff": ("f.tif", _encode(".tif", _rng(2).random((8, 8, 3)).astype(np.float32)), "float samples"),
    "int32 tiff": ("i.tif", _tiff_header(8, 8, 32, 1, 2), "32-bit int samples"),
    "float64 tiff": ("d.tif", _tiff_header(8, 8, 64, 1, 3), "64-bit float samples"),
    "png declares 65535x65535 (1 MB)": (
        "big.png",
        _big_png_declaring(65535, 65535, 1 << 20),
        "image is 65535x65535 = 4294836225 pixels, over the limit of 100000000 (raise it with "
        "PEM_DEPLOY_MAX_PIXELS",
    ),
    "png declares 20000x20000": ("b.png", _big_png_declaring(20000, 20000, 10), "over the limit"),
    "png declares 0x10": ("z.png", _big_png_declaring(0, 10, 10), "empty 0x10 image"),
    "jpeg declares 65500x65500": ("big.jpg", _jpeg_with_size(65500, 65500), "65500x65500"),
    "jpeg declares 0 width": ("z.jpg", _jpeg_with_size(0, 8), "empty 0x8 image"),
    "bmp declares 100000x100000": ("big.bmp", _bmp_header(100000, 100000), "100000x100000"),
    "bmp top-down declares huge": ("td.bmp", _bmp_header(30000, -30000), "30000x30000"),
    "tiff declares 70000x70000": ("big.tif", _tiff_header(70000, 70000), "70000x70000"),
    "webp declares 16384x16384": ("big.webp", _webp_vp8x(16384, 16384), "16384x16384"),
    "ppm declares 20000x20000": ("big.ppm", b"P6\n20000 20000\n255\n" + b"\x00" * 100, "20000x20000"),
    "pgm with bad maxval": ("m.pgm", b"P5\n4 4\n70000\n" + b"\x00" * 32, "maxval"),
    "pgm without size": ("n.pgm", b"P5\n#only a comment\n", "corrupt PNM header"),
    "png with broken IHDR type": ("c.png", _png_raw(4, 4, 8, 7, b"\x00" * 20), "invalid colour type"),
    "png without IDAT": (
        "e.png",
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
        + _png_chunk(b"IEND", b""),
        "no IDAT",
    ),
    "png with corrupt IDAT": (
        "d.png",
        _png_raw(4, 4, 8, 2, b"\x00" * 52)[:-30] + b"\x00" * 18 + _PNG[-12:],
        "",
    ),
    "bigtiff": ("b.tif", b"II+\x00\x08\x00\x00\x00" + b"\x00" * 40, "BigTIFF"),
    "jpeg without frame header": ("s.jpg", b"\xff\xd8\xff\xda\x00\x02\xff\xd9", "no frame header"),
}
for _offset in (4, 8, 12, 20, 33, 40, len(_PNG) // 2, len(_PNG) - 12, len(_PNG) - 1):
    _msg = "not an image" if _offset < 8 else "truncated"
    REFUSED_FILES[f"png truncated at {_offset}"] = ("t.png", _PNG[:_offset], _msg)
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
    result = _invoke(["infer", str(model), str(path), "--out", str(tmp_path / "out")])
    _assert_error(result, message)
    assert str(path) in result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError):
        load_image(path)


# -- 2. image files through the CLI: accepted, identical to the API on cv2.imread -----------------


def _gray(h=9, w=13, dtype=np.uint8):
    return _rng(3).integers(0, np.iinfo(dtype).max, (h, w), dtype=dtype)


ACCEPTED_FILES: dict[str, tuple[str, bytes, str]] = {
    "png rgb": ("a.png", _PNG, ""),
    "jpeg": ("a.jpg", _JPEG, ""),
    "bmp": ("a.bmp", _BMP, ""),
    "tiff": ("a.tif", _TIFF, ""),
    "webp": ("a.webp", _WEBP, ""),
    "webp lossy": ("l.webp", _encode(".webp", _color(), [cv2.IMWRITE_WEBP_QUALITY, 80]), ""),
    "ppm": ("a.ppm", _PPM, ""),
    "pgm": ("a.pgm", _encode(".pgm", _gray()), "grayscale replicated"),
    "pgm 16-bit": ("w.pgm", _encode(".pgm", _gray(dtype=np.uint16)), "16-bit values scaled"),
    "png 1x1": ("one.png", _encode(".png", _color(1, 1)), ""),
    "jpeg 1x1": ("one.jpg", _encode(".jpg", _color(1, 1)), ""),
    "png 1x999": ("row.png", _encode(".png", _color(1, 999)), ""),
    "png 999x1": ("col.png", _encode(".png", _color(999, 1)), ""),
    "png 3x7": ("odd.png", _encode(".png", _color(3, 7)), ""),
    "jpeg 33x65": ("odd.jpg", _encode(".jpg", _color(33, 65)), ""),
    "bmp 5x3": ("odd.bmp", _encode(".bmp", _color(5, 3)), ""),
    "png gray": ("g.png", _encode(".png", _gray()), "grayscale replicated to 3 channels"),
    "png gray 16-bit": ("g16.png", _encode(".png", _gray(dtype=np.uint16)), "16-bit values scaled to 8-bit"),
    "png rgb 16-bit": (
        "c16.png",
        _encode(".png", _rng(4).integers(0, 65535, (9, 13, 3), dtype=np.uint16)),
        "16-bit values scaled",
    ),
    "png rgba": ("a4.png", _encode(".png", _rng(5).integers(0, 256, (9, 13, 4), dtype=np.uint8)), "alpha"),
    "png rgba 16-bit": (
        "a16.png",
        _encode(".png", _rng(6).integers(0, 65535, (9, 13, 4), dtype=np.uint16)),
        "alpha channel dropped, 16-bit",
    ),
    "png gray+alpha": (
        "ga.png",
        _png_raw(5, 4, 8, 4, b"".join(b"\x00" + bytes(range(10)) for _ in range(4))),
        "grayscale replicated to 3 channels, alpha channel dropped",
    ),
    "png 1-bit gray": ("bit.png", _png_raw(16, 2, 1, 0, b"\x00\xaa\x55\x00\xff\x0f"), "grayscale"),
    "png palette": ("p.png", _palette_png(False), ""),
    "png palette with tRNS": ("pt.png", _palette_png(True), "alpha channel dropped"),
    "tiff gray": ("g.tif", _encode(".tif", _gray()), "grayscale"),
    "tiff gray 16-bit": ("g16.tif", _encode(".tif", _gray(dtype=np.uint16)), "16-bit"),
    "tiff rgba": ("a.tif", _encode(".tif", _rng(7).integers(0, 256, (9, 13, 4), dtype=np.uint8)), "alpha"),
    "webp rgba": ("a4.webp", _encode(".webp", _rng(8).integers(0, 256, (9, 13, 4), dtype=np.uint8)), "alpha"),
    "png content named .jpg": ("misnamed.jpg", _PNG, ""),
    "jpeg content named .png": ("misnamed.png", _JPEG, ""),
    "bmp 8-bit gray palette": ("g.bmp", _encode(".bmp", _gray()), ""),
    "jpeg gray": ("g.jpg", _encode(".jpg", _gray()), "grayscale"),
    "jpeg progressive": ("p.jpg", _encode(".jpg", _color(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), ""),
    "jpeg with trailing bytes": ("tail.jpg", _JPEG + b"\x00" * 64, ""),
}
for _o in range(1, 9):
    ACCEPTED_FILES[f"jpeg exif orientation {_o}"] = (
        f"exif{_o}.jpg",
        _exif_jpeg(_o),
        "" if _o == 1 else f"EXIF orientation {_o} applied",
    )


@pytest.mark.parametrize("case", sorted(ACCEPTED_FILES))
def test_accepted_image_file(case, model, seg, tmp_path):
    name, data, note = ACCEPTED_FILES[case]
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "out"
    result = _invoke(["infer", str(model), str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("1 frame(s) -> ")
    notes = [line for line in lines if line.startswith("note: ")]
    assert (note in notes[0] and len(notes) == 1) if note else notes == [], result.output
    expected = cv2.imread(str(path))  # what an API user would pass
    assert expected is not None
    labels = _read_labels(out / "labels" / f"{name}.png")
    assert labels.shape == expected.shape[:2]
    np.testing.assert_array_equal(labels, seg.predict(expected).labels)
    assert (out / "overlay" / f"{name}.jpg").is_file()
    record = json.loads((out / "predictions.json").read_text())["predictions"][0]
    assert record["name"] == name and record["outputs"]["labels"] == f"labels/{name}.png"


def test_exif_orientation_agrees_with_cv2_imread(seg, tmp_path):
    """Orientation 6 (rotate 90 cw): the CLI's output is portrait, like cv2.imread's image."""
    path = tmp_path / "rot.jpg"
    path.write_bytes(_exif_jpeg(6, scene(20, 40)))
    loaded = load_image(path)
    assert loaded.image.shape == (40, 20, 3) == cv2.imread(str(path)).shape
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (20, 40, 3)  # the raw pixels
    labels = seg.predict(cv2.imread(str(path))).labels
    # Rotated 90 degrees clockwise: the red left half (class 0) is now the top half.
    assert labels.shape == (40, 20) and (labels[:18] == 0).all() and (labels[22:] == 2).all()


# -- 3. file-system oddities inside a folder: skipped with one line each --------------------------


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
        target.write_bytes(_PNG)
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
        (folder / f"ok{i}.png").write_bytes(_encode(".png", scene()))
    message = _fs_case(kind, folder)
    out = tmp_path / "out"
    result = _invoke(["infer", str(model), str(folder), "--out", str(out)])
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
        strict = _invoke(["infer", str(model), str(folder), "--out", str(tmp_path / "o2"), "--strict"])
        _assert_error(strict, message)
        assert not (tmp_path / "o2").exists()
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["ok0.png.png", "ok1.png.png"]


def test_folder_where_nothing_is_readable(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"bad{i}.png").write_text("x")
    result = _invoke(["infer", str(model), str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.count("skipped: ") == 3
    assert result.output.strip().splitlines()[-1].startswith("error: ") and "none of the 3" in result.output
    assert not (tmp_path / "out").exists()


def test_huge_sparse_file_named_png_is_not_read(model, tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.write(_PNG[:33])
        f.truncate(3 << 30)  # sparse: no disk used
    result = _invoke(["infer", str(model), str(path), "--out", str(tmp_path / "out")])
    _assert_error(result, "over the limit of 1073741824 (raise it with PEM_DEPLOY_MAX_IMAGE_BYTES")


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
    path.write_bytes(_PNG)
    result = _invoke(["infer", str(model), str(path), "--out", str(tmp_path / "out")], env=env)
    _assert_error(result, message)


def test_raised_limit_accepts(model, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(_encode(".png", _color(120, 100)))
    env = {"PEM_DEPLOY_MAX_PIXELS": "12000"}
    assert _invoke(["infer", str(model), str(path), "--out", str(tmp_path / "o")], env=env).exit_code == 0


# -- 4. API arrays -------------------------------------------------------------------------------

_A = _rng(9).integers(0, 256, (12, 20, 3), dtype=np.uint8)

API_REFUSED: dict[str, tuple[object, str]] = {
    "none": (None, "expected a numpy array, got NoneType"),
    "list": ([[1, 2], [3, 4]], "got list (for several images use predict_batch)"),
    "string path": ("frame.png", "got str"),
    "bytes": (b"\x89PNG", "got bytes"),
    "rank 0": (np.array(5, np.uint8), "got shape ()"),
    "rank 1": (np.zeros(10, np.uint8), "got shape (10,)"),
    "rank 4": (np.zeros((1, 8, 8, 3), np.uint8), "4-D array"),
    "rank 5": (np.zeros((1, 1, 8, 8, 3), np.uint8), "got shape (1, 1, 8, 8, 3)"),
    "empty rows": (np.zeros((0, 5, 3), np.uint8), "empty"),
    "empty cols": (np.zeros((5, 0), np.uint8), "empty"),
    "empty channels": (np.zeros((5, 5, 0), np.uint8), "empty"),
    "2 channels": (np.zeros((5, 5, 2), np.uint8), "1, 3 or 4 channels"),
    "5 channels": (np.zeros((5, 6, 5), np.uint8), "1, 3 or 4 channels"),
    "channels first": (np.zeros((3, 20, 30), np.uint8), "channels-first"),
    "over max_pixels": (np.zeros((101, 100, 3), np.uint8), "over the limit of 10000"),
    "structured": (np.zeros((4, 4), dtype=[("a", np.uint8), ("b", np.uint8)]), "unsupported array dtype"),
}
for _dtype in (
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.object_,
):
    API_REFUSED[f"dtype {np.dtype(_dtype).name}"] = (
        np.zeros((6, 6, 3), _dtype),
        f"image dtype is {np.dtype(_dtype)}",
    )
API_REFUSED["dtype str"] = (np.full((4, 4, 3), "a"), "image dtype is <U1")
API_REFUSED["dtype datetime"] = (np.zeros((4, 4, 3), "datetime64[s]"), "image dtype is datetime64[s]")


@pytest.mark.parametrize("case", sorted(API_REFUSED))
def test_api_refuses_array(case, seg):
    array, message = API_REFUSED[case]
    limited = Segmenter(seg.artifact, seg.backend, max_pixels=10000)
    with pytest.raises(InputError) as err:
        limited.predict(array, "cam0")
    assert str(err.value).startswith("cam0: ") and message in str(err.value) and "\n" not in str(err.value)


API_ACCEPTED: dict[str, tuple[np.ndarray, np.ndarray, str]] = {
    "uint8 hwc": (_A, _A, ""),
    "uint8 gray hw": (_A[:, :, 0], np.repeat(_A[:, :, :1], 3, 2), "grayscale replicated"),
    "uint8 gray hw1": (_A[:, :, :1], np.repeat(_A[:, :, :1], 3, 2), "grayscale replicated"),
    "uint8 rgba": (np.dstack([_A, _A[:, :, :1]]), _A, "alpha channel dropped"),
    "uint16 hwc": (_A.astype(np.uint16) * 257, _A, "16-bit values scaled"),
    "uint16 big-endian": ((_A.astype(np.uint16) * 257).astype(">u2"), _A, "16-bit values scaled"),
    "uint16 gray": ((_A[:, :, 0].astype(np.uint16) << 8) | 0xFF, np.repeat(_A[:, :, :1], 3, 2), "grayscale"),
    "uint16 rgba": (np.dstack([_A, _A[:, :, :1]]).astype(np.uint16) << 8, _A, "alpha channel dropped"),
    "strided view": (np.repeat(_A, 2, axis=1)[:, ::2], _A, ""),
    "negative strides": (_A[::-1, ::-1][::-1, ::-1], _A, ""),
    "fortran order": (np.asfortranarray(_A), _A, ""),
    "transposed view": (np.ascontiguousarray(_A.transpose(1, 0, 2)).transpose(1, 0, 2), _A, ""),
    "read-only": (np.frombuffer(_A.tobytes(), np.uint8).reshape(_A.shape), _A, ""),
    "bgr channels view": (np.dstack([_A, _A])[:, :, :3], _A, ""),
    "1x1": (_A[:1, :1], _A[:1, :1], ""),
}


@pytest.mark.parametrize("case", sorted(API_ACCEPTED))
def test_api_accepts_array(case, seg):
    array, equivalent, note = API_ACCEPTED[case]
    result = seg.predict(array, "cam0")
    np.testing.assert_array_equal(result.labels, seg.predict(np.ascontiguousarray(equivalent)).labels)
    assert result.labels.shape == array.shape[:2]
    assert (len(result.notes) == 1 and note in result.notes[0]) if note else result.notes == []
    prepared, _ = prepare_image(array)
    assert prepared.flags.c_contiguous and prepared.dtype == np.uint8 and prepared.shape[2] == 3


BATCH_REFUSED: dict[str, tuple[object, object, str]] = {
    "empty list": ([], None, "no images given"),
    "empty tuple": ((), None, "no images given"),
    "a single 3-D array": (_A, None, "for one image use predict"),
    "a generator": ((a for a in [_A]), None, "expected a list or tuple"),
    "a string": ("a.png", None, "expected a list or tuple"),
    "mixed: array and path": ([_A, "b.png"], None, "image[1]: expected a numpy array, got str"),
    "mixed: array and None": ([_A, None], None, "image[1]: expected a numpy array"),
    "mixed: a float image": ([_A, _A.astype(np.float32)], None, "image[1]: image dtype is float32"),
    "names too short": ([_A, _A], ["a"], "2 images but 1 names"),
    "names not strings": ([_A], [3], "names must be a list of strings"),
    "names a string": ([_A], "a", "names must be a list of strings"),
}


@pytest.mark.parametrize("case", sorted(BATCH_REFUSED))
def test_predict_batch_argument_errors(case, seg):
    images, names, message = BATCH_REFUSED[case]
    with pytest.raises(InputError, match=re.escape(message)):
        seg.predict_batch(images, names)  # type: ignore[arg-type]


def test_predict_batch_mixed_forms_and_static_batch(tmp_path, seg):
    gray = _A[:, :, 0]
    results = seg.predict_batch((_A, gray, _A.astype(np.uint16) << 8, _A[:5, :7]), ["a", "b", "c", "d"])
    assert [r.labels.shape for r in results] == [(12, 20), (12, 20), (12, 20), (5, 7)]
    assert [len(r.notes) for r in results] == [0, 1, 1, 0] and results[1].notes[0].startswith("b: ")
    np.testing.assert_array_equal(results[2].labels, results[0].labels)
    four = np.stack([_A] * 4)
    assert len(seg.predict_batch(four)) == 4
    static2 = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64, batch=2), shape=(2, 3, 32, 64)))
    assert static2.artifact.batch == 2
    out = static2.predict_batch([_A, _A, _A])  # 3 images on a batch-2 model: the last chunk padded
    assert all(np.array_equal(r.labels, out[0].labels) for r in out)
    with pytest.raises(InputError, match="name must be a string"):
        seg.predict(_A, 5)  # type: ignore[arg-type]


# -- 5. --out folder semantics ------------------------------------------------------------------


@pytest.fixture()
def scene_png(tmp_path) -> Path:
    path = tmp_path / "scene.png"
    path.write_bytes(_encode(".png", scene()))
    return path


def test_out_dot_in_a_non_empty_cwd(model, scene_png, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    result = _invoke(["infer", str(model), str(scene_png), "--out", "."])
    _assert_error(result, "holds files pem-deploy did not write (notes.txt, scene.png)")
    assert "--exist-ok" in result.output and _tree(tmp_path) == before
    result = _invoke(["infer", str(model), str(scene_png), "--out", ".", "--exist-ok"])
    assert result.exit_code == 0, result.output
    after = _tree(tmp_path)
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
    _assert_error(_invoke(["infer", str(model), str(scene_png), "--out", str(target)]), "is not a folder")
    assert target.read_text() == "keep me"


def test_out_is_a_broken_symlink(model, scene_png, tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    _assert_error(_invoke(["infer", str(model), str(scene_png), "--out", str(tmp_path / "link")]), "broken")


def test_out_is_the_input_folder(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(_PNG)
    before = _tree(folder)
    for out in (folder, folder / "."):
        result = _invoke(["infer", str(model), str(folder), "--out", str(out), "--exist-ok"])
        _assert_error(result, "is an input of this run")
    _assert_error(
        _invoke(["infer", str(model), str(folder), "--out", str(folder / "sub" / "out")]),
        "lies inside the input folder",
    )
    assert _tree(folder) == before and not (folder / "sub").exists()


def test_input_inside_our_labels_folder(model, tmp_path):
    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    (out / "labels" / "a.png").write_bytes(_PNG)
    result = _invoke(["infer", str(model), str(out / "labels"), "--out", str(out), "--exist-ok"])
    _assert_error(result, "where this run writes its outputs")


def test_out_contains_the_input_and_the_artifact(tmp_path):
    """The artifact and the images live in DIR: refused without --exist-ok, untouched with it."""
    work = tmp_path / "work"
    work.mkdir()
    model = write_artifact(work, semantic_model(32, 64))
    (work / "images").mkdir()
    (work / "images" / "x.png").write_bytes(_encode(".png", scene()))
    (work / "labels").mkdir()
    (work / "labels" / "ground_truth.png").write_bytes(b"user data")
    before = _tree(work)
    _assert_error(_invoke(["infer", str(model), str(work / "images"), "--out", str(work)]), "did not write")
    assert _tree(work) == before
    result = _invoke(["infer", str(work), str(work / "images"), "--out", str(work), "--exist-ok"])
    assert result.exit_code == 0, result.output
    after = _tree(work)
    assert all(after[k] == v for k, v in before.items())
    assert "labels/x.png.png" in after and "predictions.json" in after


def test_foreign_file_at_an_output_path_is_refused(model, scene_png, tmp_path):
    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    (out / "labels" / "scene.png.png").write_bytes(b"not ours")
    result = _invoke(["infer", str(model), str(scene_png), "--out", str(out), "--exist-ok"])
    _assert_error(result, "was not written by pem-deploy")
    assert (out / "labels" / "scene.png.png").read_bytes() == b"not ours"
    assert sorted(p.name for p in out.iterdir()) == ["labels"]


def test_foreign_predictions_json_is_refused(model, scene_png, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.json").write_text('{"mine": true}')
    result = _invoke(["infer", str(model), str(scene_png), "--out", str(out), "--exist-ok"])
    _assert_error(result, "predictions.json: exists and was not written by pem-deploy")
    assert (out / "predictions.json").read_text() == '{"mine": true}'


def test_rerun_with_exist_ok_replaces_only_ours_and_merges(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(_encode(".png", scene()))
    out = tmp_path / "out"
    assert _invoke(["infer", str(model), str(folder), "--out", str(out)]).exit_code == 0
    # Only our files there: a rerun replaces them without a flag.
    assert _invoke(["infer", str(model), str(folder), "--out", str(out)]).exit_code == 0
    (folder / "b.png").write_bytes(_encode(".png", scene(20, 30)))
    (out / "mine.txt").write_text("user")
    _assert_error(_invoke(["infer", str(model), str(folder), "--out", str(out)]), "did not write (mine.txt)")
    assert _invoke(["infer", str(model), str(folder), "--out", str(out), "--exist-ok"]).exit_code == 0
    data = json.loads((out / "predictions.json").read_text())
    assert sorted(r["name"] for r in data["predictions"]) == ["a.png", "b.png"]
    assert (out / "mine.txt").read_text() == "user"
    single = tmp_path / "c.png"
    single.write_bytes(_encode(".png", scene()))
    assert _invoke(["infer", str(model), str(single), "--out", str(out), "--exist-ok"]).exit_code == 0
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
    assert _invoke(["infer", str(model), str(folder), "--out", str(out)]).exit_code == 0
    for rel in images:
        expected = seg.predict(cv2.imread(str(folder / rel))).labels
        np.testing.assert_array_equal(_read_labels(out / "labels" / f"{rel}.png"), expected)
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
    assert _invoke(["infer", str(model), str(video), "--out", str(out)]).exit_code == 0
    assert sorted(p.name for p in (out / "labels" / "clip.avi").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]


# -- 6. file-system faults: read-only folder, full disk -------------------------------------------


def test_read_only_output_folder(model, scene_png, tmp_path):
    with read_only_folder(tmp_path / "ro", {"keep.txt": b"x"}) as mnt:
        result = _invoke(["infer", str(model), str(scene_png), "--out", str(mnt), "--exist-ok"])
        _assert_error(result, "Read-only file system")
        result = _invoke(["infer", str(model), str(scene_png), "--out", str(mnt / "new")])
        _assert_error(result, "Read-only file system")
        assert sorted(p.name for p in mnt.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("size", ["16k", "64k", "200k"])
def test_full_disk_leaves_nothing_partial(size, model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        (folder / f"n{i:02d}.png").write_bytes(_encode(".png", _color(64, 96, seed=i)))
    with small_disk(tmp_path / "small", size) as mnt:
        out = mnt / "out"
        result = _invoke(["infer", str(model), str(folder), "--out", str(out)])
        if result.exit_code == 0:  # it fitted: then everything is there
            assert len(list((out / "labels").iterdir())) == 12
        else:
            _assert_error(result, "No space left on device")
            assert not out.exists()  # created by the run, removed again
        assert not [p for p in mnt.rglob("*") if p.name.endswith(".tmp")]


# -- 7. concurrency and staging -----------------------------------------------------------------


def test_second_run_while_locked_fails_with_one_line(model, scene_png, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lock = _Lock(out)
    try:
        result = _invoke(["infer", str(model), str(scene_png), "--out", str(out)])
        _assert_error(result, "another pem-deploy run is writing into this folder")
    finally:
        lock.release()
    assert _invoke(["infer", str(model), str(scene_png), "--out", str(out)]).exit_code == 0


@pytest.mark.parametrize("exist_ok", [False, True])
def test_two_threads_into_one_folder(exist_ok, seg, tmp_path):
    folders = []
    for t in range(2):
        folder = tmp_path / f"in{t}"
        folder.mkdir()
        for i in range(6):
            (folder / f"t{t}_{i}.png").write_bytes(_encode(".png", scene()))
        folders.append(folder)
    out = tmp_path / "out"
    outcomes: list[object] = [None, None]

    def work(t: int) -> None:
        try:
            outcomes[t] = infer_path(seg, folders[t], out, exist_ok=exist_ok)
        except PemDeployError as exc:
            outcomes[t] = exc

    run_in_threads(work, 2)
    ok = [t for t in range(2) if not isinstance(outcomes[t], PemDeployError)]
    assert ok, outcomes
    for t in range(2):
        if isinstance(outcomes[t], PemDeployError):
            text = str(outcomes[t])
            assert "another pem-deploy run" in text or "appeared while" in text, text
    names = {r["name"] for r in json.loads((out / "predictions.json").read_text())["predictions"]}
    for t in ok:  # every successful run's results are all there: none silently lost
        assert {f"t{t}_{i}.png" for i in range(6)} <= names
        assert all((out / "labels" / f"t{t}_{i}.png.png").is_file() for i in range(6))
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "labels", "overlay", "predictions.json"]


def test_stale_staging_is_cleaned_only_when_ours(model, scene_png, tmp_path):
    out = tmp_path / "out"
    for stale in (
        tmp_path / f"{STAGING_PREFIX}999999999-deadbeef-out.tmp",
        out / f"{STAGING_PREFIX}999999998-0badf00d-out.tmp",
    ):
        (stale / "labels").mkdir(parents=True)
        (stale / "labels" / "half.png.png").write_bytes(b"\x89PNG half")
    result = _invoke(["infer", str(model), str(scene_png), "--out", str(out)])
    assert result.exit_code == 0, result.output  # only our leftovers: counts as empty
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "labels", "overlay", "predictions.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]
    lookalike = out / f"{STAGING_PREFIX}user"
    lookalike.mkdir()
    (lookalike / "data.txt").write_text("user")
    _assert_error(_invoke(["infer", str(model), str(scene_png), "--out", str(out)]), "did not write")
    assert _invoke(["infer", str(model), str(scene_png), "--out", str(out), "--exist-ok"]).exit_code == 0
    assert (lookalike / "data.txt").read_text() == "user"  # no pid in its name: not provably ours, kept


# -- 8. kill -9 sweep ----------------------------------------------------------------------------

_CLI = "import sys; sys.argv[0] = 'pem-deploy'; import cli; cli.app()"


def _phase_reached(out: Path, phase: str) -> bool:
    if phase == "started":
        return out.exists()
    stagings = list(out.parent.glob(f"{STAGING_PREFIX}*"))
    stagings += list(out.glob(f"{STAGING_PREFIX}*")) if out.exists() else []
    if phase == "mid-folder":
        return any(len(list((s / "labels").glob("*.png"))) >= 20 for s in stagings if (s / "labels").is_dir())
    return (out / "labels").is_dir()  # "moving": the first outputs are being renamed in


@pytest.mark.parametrize("phase", ["started", "mid-folder", "moving"])
def test_kill_9_sweep(phase, model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    count = 150
    for i in range(count):
        (folder / f"k{i:03d}.png").write_bytes(_encode(".png", _color(24, 32, seed=i)))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, "infer", str(model), str(folder), "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and not _phase_reached(out, phase) and time.monotonic() < deadline:
        time.sleep(0.0005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if out.exists():
        _no_partial(out)
    rerun = _invoke(["infer", str(model), str(folder), "--out", str(out), "--exist-ok"])
    assert rerun.exit_code == 0, rerun.output
    assert not list(out.glob(f"{STAGING_PREFIX}*")) and not list(tmp_path.glob(f"{STAGING_PREFIX}*"))
    assert not (out / LOCK_NAME).exists()
    assert len(list((out / "labels").iterdir())) == count
    data = json.loads((out / "predictions.json").read_text())
    assert len(data["predictions"]) == count
    _no_partial(out)
