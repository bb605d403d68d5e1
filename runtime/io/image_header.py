"""Cheap image-header parsing: size, channels and depth before anything is decoded.

:func:`read_header` reads a few hundred bytes (seeking past metadata segments) of a PNG, JPEG,
BMP, TIFF, WebP or PNM (PBM/PGM/PPM) file and returns an :class:`ImageHeader`, so that an image
declaring 65535 x 65535 pixels is refused before OpenCV allocates anything.
:func:`check_complete` then checks, on the file's bytes, that the data the header promises is
all there (a truncated PNG/JPEG/BMP/WebP/PNM is refused instead of decoded into a half-grey
picture). The format is recognised from the content, not the file name.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

from runtime.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_TIFF_ENTRIES = 4096
_MAX_JPEG_SEGMENTS = 10_000


@dataclass(frozen=True)
class ImageHeader:
    """What an image file declares about itself.

    ``channels``: stored channels (1 grey, 2 grey + alpha, 3 colour, 4 colour + alpha; a palette
    image counts as 3, or 4 when its palette has transparency). ``depth``: bits per sample.
    ``sample``: ``uint``, ``int`` or ``float``. ``orientation``: the EXIF orientation (1-8, 1 =
    upright) where the header carries one. ``data_offset``: where the pixel data starts (JPEG:
    the first scan), used by :func:`check_complete`.
    """

    format: str
    width: int
    height: int
    channels: int
    depth: int
    sample: str = "uint"
    orientation: int = 1
    data_offset: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height


class _Reader:
    """Random access to a binary stream; a short read is a truncated file."""

    def __init__(self, stream: BinaryIO, name: str):
        self.stream, self.name = stream, name

    def at(self, offset: int, size: int) -> bytes:
        self.stream.seek(offset)
        data = self.stream.read(size)
        if len(data) != size:
            raise InputError(
                f"{self.name}: truncated or corrupt image header (it needs bytes up to {offset + size})"
            )
        return data

    def size(self) -> int:
        return self.stream.seek(0, io.SEEK_END)


def sniff_format(first: bytes) -> str | None:
    """The image format of a file from its first 16 bytes, or None."""
    if first.startswith(PNG_SIGNATURE):
        return "PNG"
    if first.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if first.startswith(b"BM"):
        return "BMP"
    if first[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if first[:4] == b"RIFF" and first[8:12] == b"WEBP":
        return "WebP"
    if len(first) >= 3 and first[0:1] == b"P" and first[1:2] in b"123456" and first[2:3].isspace():
        return "PNM"
    return None


def read_header(stream: BinaryIO, name: str = "image") -> ImageHeader:
    """Parse the header of the image in ``stream`` (seekable, binary); raises :class:`InputError`."""
    reader = _Reader(stream, name)
    stream.seek(0)
    first = stream.read(16)
    fmt = sniff_format(first)
    if fmt is None:
        raise InputError(f"{name}: not an image (no PNG, JPEG, BMP, TIFF, WebP or PNM signature)")
    header = _PARSERS[fmt](reader)
    if header.width <= 0 or header.height <= 0:
        raise InputError(f"{name}: {fmt} header declares an empty {header.width}x{header.height} image")
    return header


def _png(r: _Reader) -> ImageHeader:
    length, kind = struct.unpack(">I4s", r.at(8, 8))
    if kind != b"IHDR" or length != 13:
        raise InputError(f"{r.name}: PNG without an IHDR header chunk")
    width, height, depth, color = struct.unpack(">IIBB", r.at(16, 10))
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color)
    if channels is None or depth not in (1, 2, 4, 8, 16):
        raise InputError(f"{r.name}: PNG header has an invalid colour type {color} / bit depth {depth}")
    if color == 3:  # palette: transparent if a tRNS chunk precedes the image data
        offset = 33
        for _ in range(64):
            chunk_len, chunk = struct.unpack(">I4s", r.at(offset, 8))
            if chunk == b"tRNS":
                channels = 4
            if chunk in (b"IDAT", b"IEND", b"tRNS"):
                break
            offset += 12 + chunk_len
        depth = 8
    return ImageHeader("PNG", width, height, channels, depth)


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(r: _Reader) -> ImageHeader:
    offset, sof, orientation = 2, None, 1
    for _ in range(_MAX_JPEG_SEGMENTS):
        byte = r.at(offset, 1)
        if byte != b"\xff":
            raise InputError(f"{r.name}: corrupt JPEG (no marker at byte {offset})")
        marker = r.at(offset + 1, 1)[0]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            offset += 2
            continue
        if marker == 0xD9:
            break
        (length,) = struct.unpack(">H", r.at(offset + 2, 2))
        if length < 2:
            raise InputError(f"{r.name}: corrupt JPEG (segment length {length} at byte {offset})")
        if marker in _SOF_MARKERS and sof is None:
            precision, height, width, components = struct.unpack(">BHHB", r.at(offset + 4, 6))
            sof = (precision, height, width, components)
        elif marker == 0xE1 and length >= 16:
            orientation = _exif_orientation(r.at(offset + 4, min(length - 2, 4096))) or orientation
        elif marker == 0xDA:  # start of scan: the header is over
            if sof is None:
                break
            precision, height, width, components = sof
            if height == 0:
                raise InputError(f"{r.name}: JPEG defines its height after the scan (DNL); not supported")
            return ImageHeader("JPEG", width, height, components, precision, "uint", orientation, offset)
        offset += 2 + length
    raise InputError(f"{r.name}: corrupt JPEG (no frame header before the image data)")


def _exif_orientation(payload: bytes) -> int | None:
    """Orientation tag (0x0112) of an APP1 ``Exif`` payload, or None."""
    if not payload.startswith(b"Exif\x00\x00") or len(payload) < 14:
        return None
    tiff = payload[6:]
    endian = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if endian is None:
        return None
    (ifd,) = struct.unpack(endian + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(endian + "H", tiff[ifd : ifd + 2])
    for i in range(min(count, 512)):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(endian + "HH", entry[:4])
        if tag == 0x0112 and kind == 3:
            (value,) = struct.unpack(endian + "H", entry[8:10])
            return value if 1 <= value <= 8 else None
    return None


def _bmp(r: _Reader) -> ImageHeader:
    (dib,) = struct.unpack("<I", r.at(14, 4))
    if dib == 12:
        width, height, _, bpp = struct.unpack("<HHHH", r.at(18, 8))
    elif dib >= 40:
        width, height, _, bpp = struct.unpack("<iiHH", r.at(18, 12))
    else:
        raise InputError(f"{r.name}: BMP with an unknown header size {dib}")
    if bpp not in (1, 2, 4, 8, 16, 24, 32):
        raise InputError(f"{r.name}: BMP header has an invalid bit count {bpp}")
    return ImageHeader("BMP", abs(width), abs(height), 4 if bpp == 32 else 3, 8)


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


def _tiff_tags(r: _Reader) -> tuple[str, dict[int, tuple[int, int, int]]]:
    """Endianness and the first IFD's tags as {tag: (type, count, value-or-offset)}."""
    endian = "<" if r.at(0, 2) == b"II" else ">"
    (magic,) = struct.unpack(endian + "H", r.at(2, 2))
    if magic == 43:
        raise InputError(f"{r.name}: BigTIFF is not supported; save it as a classic TIFF or PNG")
    (ifd,) = struct.unpack(endian + "I", r.at(4, 4))
    (count,) = struct.unpack(endian + "H", r.at(ifd, 2))
    if count == 0 or count > _MAX_TIFF_ENTRIES:
        raise InputError(f"{r.name}: corrupt TIFF (first directory has {count} entries)")
    raw = r.at(ifd + 2, 12 * count)
    tags: dict[int, tuple[int, int, int]] = {}
    for i in range(count):
        tag, kind, n = struct.unpack(endian + "HHI", raw[12 * i : 12 * i + 8])
        size = _TIFF_TYPE_SIZES.get(kind, 1) * n
        if size <= 4 and kind in (3, 8):
            (value,) = struct.unpack(endian + "H", raw[12 * i + 8 : 12 * i + 10])
        else:
            (value,) = struct.unpack(endian + "I", raw[12 * i + 8 : 12 * i + 12])
        tags[tag] = (kind, n, value)
    return endian, tags


def _tiff_values(r: _Reader, endian: str, entry: tuple[int, int, int], limit: int = 1 << 20) -> list[int]:
    kind, n, value = entry
    if kind not in (3, 4, 8, 9, 16):
        raise InputError(f"{r.name}: corrupt TIFF (numeric tag of type {kind})")
    size = _TIFF_TYPE_SIZES[kind] if kind != 16 else 8
    if n > limit:
        raise InputError(f"{r.name}: corrupt TIFF (a tag holds {n} values)")
    if n * size <= 4:
        if n == 1:
            return [value]
        raw = struct.pack(endian + "I", value)
    else:
        raw = r.at(value, n * size)
    code = {3: "H", 8: "h", 4: "I", 9: "i", 16: "Q"}[kind]
    return list(struct.unpack(f"{endian}{n}{code}", raw))


def _tiff(r: _Reader) -> ImageHeader:
    endian, tags = _tiff_tags(r)
    if 256 not in tags or 257 not in tags:
        raise InputError(f"{r.name}: corrupt TIFF (no width/height tags)")
    width, height = tags[256][2], tags[257][2]
    channels = tags[277][2] if 277 in tags else 1
    bits = _tiff_values(r, endian, tags[258], 64) if 258 in tags else [1]
    sample_format = max(_tiff_values(r, endian, tags[339], 64)) if 339 in tags else 1
    sample = {1: "uint", 2: "int", 3: "float"}.get(sample_format, "unknown")
    if 262 in tags and tags[262][2] == 3:  # palette
        channels = 3
    orientation = tags[274][2] if 274 in tags and 1 <= tags[274][2] <= 8 else 1
    return ImageHeader("TIFF", width, height, channels, max(bits), sample, orientation)


def _webp(r: _Reader) -> ImageHeader:
    kind = r.at(12, 4)
    if kind == b"VP8 ":
        frame = r.at(20, 10)
        if frame[3:6] != b"\x9d\x01\x2a":
            raise InputError(f"{r.name}: corrupt WebP (bad VP8 start code)")
        width, height = struct.unpack("<HH", frame[6:10])
        return ImageHeader("WebP", width & 0x3FFF, height & 0x3FFF, 3, 8)
    if kind == b"VP8L":
        data = r.at(20, 5)
        if data[0] != 0x2F:
            raise InputError(f"{r.name}: corrupt WebP (bad lossless signature)")
        (bits,) = struct.unpack("<I", data[1:5])
        alpha = (bits >> 28) & 1
        return ImageHeader("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 4 if alpha else 3, 8)
    if kind == b"VP8X":
        data = r.at(20, 10)
        width = int.from_bytes(data[4:7], "little") + 1
        height = int.from_bytes(data[7:10], "little") + 1
        return ImageHeader("WebP", width, height, 4 if data[0] & 0x10 else 3, 8)
    raise InputError(f"{r.name}: corrupt WebP (unknown chunk {kind!r})")


def _pnm(r: _Reader) -> ImageHeader:
    head = r.stream
    head.seek(0)
    text = head.read(1024)
    kind = text[1:2]
    wanted = 2 if kind in b"14" else 3
    fields: list[int] = []
    pos = 2
    while len(fields) < wanted:
        while pos < len(text) and (text[pos : pos + 1].isspace() or text[pos : pos + 1] == b"#"):
            if text[pos : pos + 1] == b"#":
                end = text.find(b"\n", pos)
                pos = len(text) if end < 0 else end
            pos += 1
        start = pos
        while pos < len(text) and text[pos : pos + 1].isdigit():
            pos += 1
        if start == pos or pos - start > 9:
            raise InputError(f"{r.name}: corrupt PNM header (P{kind.decode()}: no width/height/maxval)")
        fields.append(int(text[start:pos]))
    maxval = fields[2] if wanted == 3 else 1
    if not 0 < maxval < 65536:
        raise InputError(f"{r.name}: corrupt PNM header (maxval {maxval})")
    channels = 3 if kind in b"36" else 1
    return ImageHeader("PNM", fields[0], fields[1], channels, 16 if maxval > 255 else 8, data_offset=pos + 1)


_PARSERS = {"PNG": _png, "JPEG": _jpeg, "BMP": _bmp, "TIFF": _tiff, "WebP": _webp, "PNM": _pnm}


def check_complete(data: bytes, header: ImageHeader, name: str = "image") -> None:
    """Raise :class:`InputError` when ``data`` (the whole file) lacks what ``header`` promises."""
    try:
        _check_complete(data, header, name)
    except struct.error:
        raise InputError(f"{name}: truncated {header.format} file ({len(data)} bytes)") from None


def _check_complete(data: bytes, header: ImageHeader, name: str) -> None:
    truncated = f"{name}: truncated {header.format} file ({len(data)} bytes)"
    if header.format == "PNG":
        offset, seen_data = 8, False
        while True:
            if offset + 8 > len(data):
                raise InputError(truncated + ": no IEND chunk")
            length, kind = struct.unpack(">I4s", data[offset : offset + 8])
            offset += 12 + length
            if offset > len(data):
                raise InputError(truncated + f": {kind.decode('latin-1')} chunk cut short")
            seen_data |= kind == b"IDAT"
            if kind == b"IEND":
                if not seen_data:
                    raise InputError(f"{name}: PNG without image data (no IDAT chunk)")
                return
    if header.format == "JPEG":
        # 0xFF in entropy-coded data is escaped as FF00, so FFD9 after the first scan is the end.
        if data.find(b"\xff\xd9", header.data_offset) < 0:
            raise InputError(truncated + ": no end-of-image marker")
        return
    if header.format == "BMP":
        (offset,) = struct.unpack("<I", data[10:14])
        (dib,) = struct.unpack("<I", data[14:18])
        if dib >= 40:
            bpp, compression = struct.unpack("<HI", data[28:34])
            if compression not in (0, 3, 6):  # RLE / embedded JPEG/PNG: sizes vary
                return
        else:
            (bpp,) = struct.unpack("<H", data[24:26])
        row = (header.width * bpp + 31) // 32 * 4
        if offset + row * header.height > len(data):
            raise InputError(truncated + f": needs {offset + row * header.height} bytes of pixel data")
        return
    if header.format == "WebP":
        (size,) = struct.unpack("<I", data[4:8])
        if size + 8 > len(data):
            raise InputError(truncated + f": RIFF declares {size + 8} bytes")
        return
    if header.format == "PNM":
        text = data[1:2]
        if text in b"56":
            sample = 2 if header.depth == 16 else 1
            need = header.data_offset + header.pixels * header.channels * sample
        elif text == b"4":
            need = header.data_offset + (header.width + 7) // 8 * header.height
        else:
            return
        if need > len(data):
            raise InputError(truncated + f": needs {need} bytes")
        return
    if header.format == "TIFF":
        reader = _Reader(io.BytesIO(data), name)
        endian, tags = _tiff_tags(reader)
        for offsets_tag, counts_tag in ((273, 279), (324, 325)):
            if offsets_tag in tags and counts_tag in tags:
                offsets = _tiff_values(reader, endian, tags[offsets_tag])
                counts = _tiff_values(reader, endian, tags[counts_tag])
                if max(o + c for o, c in zip(offsets, counts)) > len(data):
                    raise InputError(truncated + ": image strips run past the end")
