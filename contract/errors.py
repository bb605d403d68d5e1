"""The one error root of pem-deploy.

Every typed error of the project derives from :class:`PemDeployError`. Its message is one line
that names the file, argument or value at fault, so the CLI can print ``error: <message>`` and
exit with status 2 without a traceback, and API users can catch one type.
"""

from __future__ import annotations


class PemDeployError(Exception):
    """Base class of every error pem-deploy raises on purpose (bad input, file, config, argument)."""

    exit_code: int = 2


class UsageError(PemDeployError, ValueError):
    """A command-line or API argument is out of range or inconsistent with another one."""


def one_line(message: object) -> str:
    """``message`` as a single line (newlines folded), for ``error: ...`` output."""
    text = " ".join(str(message).split())
    return text or "unknown error"


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system failure: the path(s) and the reason (disk full, permission...)."""
    reason = exc.strerror or exc.__class__.__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    if paths:
        return one_line(f"{' -> '.join(str(p) for p in paths)}: {reason}")
    return one_line(f"{reason}: {exc}" if str(exc) and str(exc) != reason else reason)
