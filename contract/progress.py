"""Progress of long work, on a terminal and off it: the one mechanism every long step uses.

On a terminal a :class:`StatusLine` refreshes one line in place (``\\r``); anywhere else (CI logs,
``nohup``, pipes) it writes a whole line at most every :data:`EVERY_S` seconds, so a step that
runs for minutes is never silent and a log is not flooded. :func:`heartbeat` keeps a line coming
while one call runs for long without reporting (an exporter, a big evaluation).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

EVERY_S = 5.0  # seconds between progress lines when the output is not a terminal


def stream_is_tty(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (``False`` for anything without ``isatty``)."""
    return bool(getattr(stream, "isatty", lambda: False)())


class StatusLine:
    """A status text shown in place on a terminal, or as a line every ``every`` seconds elsewhere.

    ``update(text)`` shows ``text`` (``force``: off a terminal, now rather than when due);
    ``finish()`` ends the refreshed line so what follows starts on a line of its own.
    """

    def __init__(self, stream: TextIO | None = None, every: float | None = None):
        self.stream = stream or sys.stderr
        self.every = EVERY_S if every is None else every
        self.start = time.monotonic()
        self.last = self.start
        self.tty = stream_is_tty(self.stream)
        self._shown = False
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, text: str, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if self.tty:
                self.stream.write(f"\r{text}   ")
            elif force or now - self.last >= self.every:
                self.stream.write(text + "\n")
                self.last = now
            else:
                return
            self.stream.flush()
            self._shown = True

    def finish(self) -> None:
        with self._lock:
            if self.tty and self._shown:
                self.stream.write("\n")
                self.stream.flush()
            self._shown = False


@contextlib.contextmanager
def heartbeat(line: StatusLine, label: str) -> Iterator[None]:
    """While the body runs, ``line`` shows ``label: N s`` every ``line.every`` seconds off a
    terminal (a terminal has its own spinner or bar), for calls that report nothing themselves."""
    if line.tty:
        yield
        return
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(line.every):
            line.update(f"{label}: {time.monotonic() - start:.0f} s", force=True)

    thread = threading.Thread(target=beat, name="pem-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
