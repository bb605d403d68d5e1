"""Progress display for export steps: a spinner with per-step timings on a terminal, quiet otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO


class ConsoleProgress:
    """Callable progress sink (``progress(message)`` starts a step) for the export pipeline.

    On a TTY it shows a spinner for the running step and a ``done`` line with the time of each
    finished one (rich); when ``stream`` is not a TTY (CI, pipes) it prints nothing. Use as a
    context manager so that the last step is closed.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._status: Any = None
        self._console: Any = None
        self._current: str | None = None
        self._started = 0.0

    def __call__(self, message: str) -> None:
        if not self.enabled:
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

    def close(self) -> None:
        """Close the running step and remove the spinner."""
        self._finish()
        if self._status is not None:
            self._status.stop()
            self._status = None

    @contextlib.contextmanager
    def bar_below(self) -> Iterator[bool]:
        """Stop the spinner while a step draws its own progress bar (training's steps and ETA);
        yields whether a bar should be drawn at all (only when this progress is shown)."""
        if self._status is not None:
            self._status.stop()
        try:
            yield self.enabled
        finally:
            if self._status is not None:
                self._status.start()

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._current = None  # a failed step is not "done"
        self.close()
