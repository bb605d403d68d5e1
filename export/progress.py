"""Progress display for export steps: a spinner with per-step timings on a terminal; elsewhere (CI
logs, ``nohup``, pipes) a line every few seconds while a step runs
(:mod:`contract.progress`, the mechanism every long step shares)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from contract.progress import StatusLine, heartbeat


class ConsoleProgress:
    """Callable progress sink (``progress(message)`` starts a step) for the export pipeline.

    On a TTY it shows a spinner for the running step and a ``done`` line with the time of each
    finished one (rich). When ``stream`` is not a TTY (CI, ``nohup``, pipes) a step running for
    longer than a few seconds prints ``step: N s`` every few seconds (a one-call step such as the
    R50 export reports nothing for minutes otherwise). ``enabled=False`` prints nothing. Use as a
    context manager so that the last step is closed.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = True if enabled is None else enabled
        self.lines = not self.stream.isatty()  # line mode off a terminal
        self._status: Any = None
        self._console: Any = None
        self._current: str | None = None
        self._started = 0.0
        self._beat: contextlib.ExitStack | None = None

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        if self.lines:  # quick steps stay silent: an early error is then the only line
            self._stop_beat()
            line = StatusLine(self.stream)
            self._beat = contextlib.ExitStack()
            self._beat.enter_context(heartbeat(line, message))
            return
        self._finish()
        if self._console is None:
            try:
                from rich.console import Console
            except ImportError:  # plain lines without rich
                self.stream.write(f"{message}...\n")
                return
            self._console = Console(file=self.stream)
        if self._status is None:
            self._status = self._console.status(message)
            self._status.start()
        else:
            self._status.update(message)
        self._current = message
        self._started = time.perf_counter()

    def _finish(self) -> None:
        if self._current is not None and self._console is not None:
            elapsed = time.perf_counter() - self._started
            self._console.print(f"[green]done[/green] {self._current} ({elapsed:.1f} s)", highlight=False)
            self._current = None

    def _stop_beat(self) -> None:
        if self._beat is not None:
            self._beat.close()
            self._beat = None

    def close(self) -> None:
        """Close the running step and remove the spinner."""
        self._stop_beat()
        self._finish()
        if self._status is not None:
            self._status.stop()
            self._status = None

    @contextlib.contextmanager
    def bar_below(self) -> Iterator[bool | None]:
        """Stop the spinner while a step draws its own progress bar (training's steps and ETA);
        yields what the step's ``progress`` argument should be: ``True`` (a bar, on a terminal),
        ``None`` (the step's own lines every few seconds, off a terminal) or ``False`` (quiet)."""
        if self._status is not None:
            self._status.stop()
        self._stop_beat()  # the step prints its own lines
        try:
            yield (None if self.lines else True) if self.enabled else False
        finally:
            if self._status is not None:
                self._status.start()

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._current = None  # a failed step is not "done"
        self.close()
