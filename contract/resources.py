"""Up-front memory checks: refuse a size that cannot fit before minutes of work and an OOM kill.

Commands estimate what a requested size needs (bytes per pixel times pixels, plus fixed costs)
and call :func:`check_memory`, which compares it with the memory available now and raises
:class:`ResourceError` with one line naming the size, the estimate and how to override it.
Torch-free: used by the runtime, the exporter and the dataset generator alike.
"""

from __future__ import annotations

import os

from contract.errors import PemDeployError

#: Set to 1 to skip every memory check (the estimate is conservative, not exact).
OVERRIDE_ENV = "PEM_DEPLOY_IGNORE_MEMORY_CHECK"


class ResourceError(PemDeployError, MemoryError):
    """A requested size needs more memory than this machine has available."""


def available_memory_bytes() -> int:
    """Memory available to new allocations now: ``MemAvailable`` of /proc/meminfo, else sysconf.

    Returns a huge number when neither can be read (then nothing is refused).
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human-readable string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_memory(what: str, needed_bytes: float, available: int | None = None) -> None:
    """Raise :class:`ResourceError` when ``needed_bytes`` exceeds the available memory.

    ``what`` names the request (e.g. ``"export at 32000x32000, batch 1"``). The check is skipped
    when the environment variable ``PEM_DEPLOY_IGNORE_MEMORY_CHECK=1`` is set.
    """
    if os.environ.get(OVERRIDE_ENV, "") == "1":
        return
    free = available_memory_bytes() if available is None else available
    if needed_bytes > free:
        raise ResourceError(
            f"{what} needs about {format_bytes(needed_bytes)} of memory (estimate), but only "
            f"{format_bytes(free)} is available; use a smaller size or batch, "
            f"or set {OVERRIDE_ENV}=1 to try anyway"
        )
