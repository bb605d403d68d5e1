"""Reading a truncated MCAP file (a recorder that died) up to its last complete message.

An MCAP file's index and summary sit at its end, so a file cut short cannot be opened by an
indexed reader (rosbags refuses it). Its records are still there in order: magic, then
``opcode (u8) | length (u64) | content``, with messages either top level or inside chunks (zstd /
lz4 / uncompressed). :class:`McapRecovery` walks them from the start and stops at the first
record that is incomplete or does not decode, keeping every message before it, like the official
``mcap`` stream reader does. Spec: https://mcap.dev/spec.

Only what :class:`runtime.io.ros.bags.BagReader` needs is implemented: schemas, channels, messages
and chunks (other records are skipped by their length).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"\x89MCAP0\r\n"
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK, _DATA_END, _FOOTER = 0x03, 0x04, 0x05, 0x06, 0x0F, 0x02


class RecoveryError(ValueError):
    """Not an MCAP file at all (no magic, or no record before the damage)."""


@dataclass
class RecoveredConnection:
    """A channel of the file in the shape rosbags gives its connections (what BagReader reads)."""

    id: int
    topic: str
    msgtype: str
    msgcount: int = 0


@dataclass
class _Stop:
    offset: int = 0
    reason: str = ""


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # Python 3.14; rosbags depends on its backport
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        return zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise ValueError(f"unsupported chunk compression {compression!r}")


class _Cursor:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("record ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        return self.take(self.u32()).decode("utf-8")


class McapRecovery:
    """The complete messages of a (truncated) MCAP file; the rosbags ``Reader`` calls BagReader uses.

    After construction (one pass over the file): :attr:`connections`, :attr:`recovered` (complete
    messages), :attr:`stopped_at` (byte offset of the first damaged record) and :attr:`reason`.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.is_open = True
        self._schemas: dict[int, str] = {}
        self._channels: dict[int, RecoveredConnection] = {}
        self.recovered = 0
        self._stop = _Stop()
        for _ in self._walk(count_only=True):
            pass
        if not self._channels:
            raise RecoveryError(f"{self.path}: no complete MCAP channel before byte {self._stop.offset}")

    @property
    def connections(self) -> list[RecoveredConnection]:
        return list(self._channels.values())

    @property
    def stopped_at(self) -> int:
        return self._stop.offset

    @property
    def reason(self) -> str:
        return self._stop.reason

    def messages(
        self, connections: Iterable[RecoveredConnection] = ()
    ) -> Iterator[tuple[RecoveredConnection, int, bytes]]:
        """``(connection, log time ns, serialized message)`` in file order, up to the damage."""
        wanted = {c.id for c in connections} or set(self._channels)
        for channel_id, log_time, data in self._walk(count_only=False):
            if channel_id in wanted:
                yield self._channels[channel_id], log_time, data

    def close(self) -> None:
        self.is_open = False

    def _walk(self, count_only: bool) -> Iterator[tuple[int, int, bytes]]:
        with self.path.open("rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise RecoveryError(f"{self.path}: not an MCAP file (no MCAP magic at its start)")
            yield from self._records(f, count_only)

    def _records(self, f: BinaryIO, count_only: bool) -> Iterator[tuple[int, int, bytes]]:
        size = os.fstat(f.fileno()).st_size
        while True:
            offset = f.tell()
            head = f.read(9)
            if len(head) < 9:
                self._stop = _Stop(offset, "the file ends" if not head else "the file ends inside a record")
                return
            opcode, length = struct.unpack("<BQ", head)
            if offset + 9 + length > size:
                self._stop = _Stop(offset, f"record 0x{opcode:02x} at byte {offset} is cut short")
                return
            if opcode in (_DATA_END, _FOOTER):
                self._stop = _Stop(offset, "the data section is complete")
                return
            if opcode not in (_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK):
                f.seek(length, os.SEEK_CUR)
                continue
            content = f.read(length)
            try:
                found = list(self._parse(opcode, content, count_only))
            except Exception as exc:  # any decoding failure marks the damage; keep what came before
                self._stop = _Stop(offset, f"record 0x{opcode:02x} at byte {offset} is corrupt ({exc})")
                return
            for channel_id, log_time, data in found:
                if count_only:
                    self._channels[channel_id].msgcount += 1
                    self.recovered += 1
                yield channel_id, log_time, data

    def _parse(self, opcode: int, content: bytes, count_only: bool) -> Iterator[tuple[int, int, bytes]]:
        c = _Cursor(content)
        if opcode == _SCHEMA:
            schema_id, name = c.u16(), c.string()
            self._schemas[schema_id] = name
        elif opcode == _CHANNEL:
            channel_id, schema_id, topic = c.u16(), c.u16(), c.string()
            if channel_id not in self._channels:
                msgtype = self._schemas.get(schema_id, "")
                self._channels[channel_id] = RecoveredConnection(channel_id, topic, msgtype)
        elif opcode == _MESSAGE:
            channel_id, _sequence, log_time, _publish = c.u16(), c.u32(), c.u64(), c.u64()
            data = content[c.pos :]
            if channel_id in self._channels:
                yield channel_id, log_time, data
        elif opcode == _CHUNK:
            c.u64(), c.u64()
            uncompressed_size, _crc, compression = c.u64(), c.u32(), c.string()
            records = c.take(c.u64())
            inner = _decompress(records, compression, uncompressed_size)
            # Parse the whole chunk before yielding: a chunk that fails half-way yields nothing.
            messages = []
            sub = _Cursor(inner)
            while sub.pos < len(inner):
                opcode_, length_ = struct.unpack("<BQ", sub.take(9))
                body = sub.take(length_)
                if opcode_ in (_SCHEMA, _CHANNEL, _MESSAGE):
                    messages.extend(self._parse(opcode_, body, count_only))
            yield from messages
