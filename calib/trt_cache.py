"""TensorRT calibration caches in TensorRT's own text format (for the TensorRT 10 implicit path).

Format, as TensorRT's calibrators read and write it::

    TRT-100300-EntropyCalibration2
    images: 3c8b4396
    relu: 3d0f1a2b
    ...

The header carries the TensorRT version as an integer (major * 10000 + minor * 100 + patch,
``100300`` = 10.3.0) and the algorithm (``EntropyCalibration2``, ``MinMaxCalibration``,
``LegacyCalibration``); each further line is ``<tensor name>: <8 hex digits>``, the big-endian
IEEE-754 bits of the float32 scale ``amax / 127``.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from calib.errors import CalibrationError
from contract.fs import atomic_write_bytes

ALGORITHMS: tuple[str, ...] = (
    "EntropyCalibration2",
    "MinMaxCalibration",
    "EntropyCalibration",
    "LegacyCalibration",
)
DEFAULT_TRT_VERSION = "10.3.0"  # JetPack 6
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")


def version_int(version: str) -> int:
    """``"10.3.0"`` -> ``100300``."""
    parts = version.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise CalibrationError(f"--trt-version {version!r}: expected MAJOR.MINOR.PATCH, e.g. 10.3.0")
    major, minor, patch = (int(p) for p in ([*parts, "0", "0"])[:3])
    return major * 10000 + minor * 100 + patch


def algorithm_for(method: str) -> str:
    """The algorithm name written into the header for ``method``.

    Always ``EntropyCalibration2``: TensorRT only accepts a cache whose header names the
    algorithm of the calibrator reading it, and ``export.tensorrt_engine`` serves caches through
    an ``IInt8EntropyCalibrator2``. The scales themselves are ours (min-max, percentile or
    entropy), which TensorRT uses as they are.
    """
    return "EntropyCalibration2"


def float_to_hex(value: float) -> str:
    return struct.pack(">f", value).hex()


def hex_to_float(text: str) -> float:
    return float(struct.unpack(">f", bytes.fromhex(text))[0])


@dataclass
class CalibrationCache:
    """A parsed cache: TensorRT version integer, algorithm, and float32 scale per tensor."""

    version: int
    algorithm: str
    scales: dict[str, float] = field(default_factory=dict)

    def amax(self) -> dict[str, float]:
        return {name: scale * 127.0 for name, scale in self.scales.items()}

    def to_text(self) -> str:
        lines = [f"TRT-{self.version}-{self.algorithm}"]
        lines += [f"{name}: {float_to_hex(scale)}" for name, scale in self.scales.items()]
        return "\n".join(lines) + "\n"


def make_cache(
    amax: Mapping[str, float], method: str, trt_version: str = DEFAULT_TRT_VERSION
) -> CalibrationCache:
    """A cache with scale ``amax / 127`` per tensor (rounded to float32, as TensorRT stores it)."""
    scales = {}
    for name, value in amax.items():
        if any(c in name for c in "\n\r"):
            raise CalibrationError(f"tensor name {name!r} cannot be written to a calibration cache")
        scales[name] = hex_to_float(float_to_hex(max(float(value), 0.0) / 127.0))
    return CalibrationCache(version_int(trt_version), algorithm_for(method), scales)


def parse_cache(text: str, path: str | os.PathLike[str] = "<cache>") -> CalibrationCache:
    """Parse TensorRT's text format; :class:`CalibrationError` naming the file and line if bad."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise CalibrationError(f"{path}: empty calibration cache")
    header = _HEADER.match(lines[0].strip())
    if header is None:
        raise CalibrationError(f"{path}:1: not a TensorRT calibration cache header: {lines[0][:60]!r}")
    cache = CalibrationCache(int(header.group(1)), header.group(2))
    for number, line in enumerate(lines[1:], start=2):
        match = _LINE.match(line)
        if match is None:
            raise CalibrationError(f"{path}:{number}: expected 'tensor: 8 hex digits', got {line[:60]!r}")
        cache.scales[match.group(1)] = hex_to_float(match.group(2))
    return cache


def read_cache(path: str | os.PathLike[str]) -> CalibrationCache:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such calibration cache") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: cannot read calibration cache ({exc})") from None
    return parse_cache(text, path)


def write_cache(path: str | os.PathLike[str], cache: CalibrationCache) -> Path:
    """Write ``cache`` atomically (temporary file + rename)."""
    atomic_write_bytes(Path(path), cache.to_text().encode("utf-8"))
    return Path(path)
