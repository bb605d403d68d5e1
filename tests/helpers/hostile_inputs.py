"""Generated hostile inputs for the runtime: image files built byte by byte (PNG chunks, TIFF / BMP /
WebP headers, EXIF JPEGs) and the checks the hostile-input tests share (tests/runtime/hostile_inputs)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from cli import app
from contract.fs import STAGING_PREFIX, staging_pid
from tests.helpers.runtime_models import scene

RUNNER = CliRunner()


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def encode(suffix: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(suffix, image, params or [])
    assert ok
    return buf.tobytes()


def color_image(h: int = 24, w: int = 40, seed: int = 0) -> np.ndarray:
    return rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(width: int, height: int, depth: int, color: int, rows: bytes, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def palette_png(transparent: bool) -> bytes:
    h, w = 6, 10
    indices = (np.arange(h * w).reshape(h, w) % 4).astype(np.uint8)
    rows = b"".join(b"\x00" + indices[y].tobytes() for y in range(h))
    extra = png_chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 90, 90, 90]))
    if transparent:
        extra += png_chunk(b"tRNS", bytes([0, 128, 255, 255]))
    return png_raw(w, h, 8, 3, rows, extra)


def exif_jpeg(orientation: int, image: np.ndarray | None = None) -> bytes:
    """A JPEG with an APP1 Exif segment (big-endian TIFF, one IFD entry: Orientation)."""
    data = encode(".jpg", image if image is not None else scene(20, 40), [cv2.IMWRITE_JPEG_QUALITY, 95])
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def tiff_header(width: int, height: int, bits: int = 8, spp: int = 1, sample_format: int = 1) -> bytes:
    entries = [(256, 4, width), (257, 4, height), (258, 3, bits), (277, 3, spp), (339, 3, sample_format)]
    entries += [(273, 4, 8 + 2 + 12 * 7 + 4), (279, 4, 16)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + b"\x00" * 16


def bmp_header(width: int, height: int, bpp: int = 24) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + dib + b"\x00" * 64


def webp_vp8x(width: int, height: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + bytes([0, 0, 0, 0])
    chunk += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(".jpg", color_image(8, 8)))
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def big_png_declaring(width: int, height: int, pad: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"tEXt", b"pad\x00" + b"x" * pad)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + png_chunk(b"IEND", b"")
    )


def invoke_cli(args: list[str], env: dict[str, str] | None = None):
    result = RUNNER.invoke(app, args, env=env)
    assert "Traceback" not in result.output, result.output
    return result


def read_labels(path: Path) -> np.ndarray:
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert labels is not None, path
    return labels


def assert_nothing_partial(out: Path) -> None:
    """Nothing half-written: no temp files, every label PNG decodes, staging only if ours."""
    for p in out.rglob("*"):
        assert not p.name.endswith(".tmp") or STAGING_PREFIX in str(p), p
        if p.suffix == ".png" and "labels" in p.parts and STAGING_PREFIX not in str(p):
            assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None, p
        if p.name.startswith(STAGING_PREFIX):  # ours: named with its writer's pid
            assert staging_pid(p.name) is not None, p


PNG = encode(".png", color_image())
"""A small valid colour PNG."""
