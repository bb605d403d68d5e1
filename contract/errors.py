"""The one error root of pem-deploy.

Every typed error of the project derives from :class:`PemDeployError`. Its message is one line
that names the file, argument or value at fault, so the CLI can print ``error: <message>`` and
exit with status 2 without a traceback, and API users can catch one type.

Hierarchy of the artifact errors (shared by ``export`` and ``runtime``, which re-export them)::

    PemDeployError
    +-- ArtifactError          a model file or its sidecar is missing, unreadable or inconsistent
    |   +-- SidecarError       the sidecar breaks the schema of contract/sidecar.py (names the field)
    +-- OutputError            an output cannot be written as asked (contract/output.py; names the path)
        +-- OutputExistsError  the target holds a file or folder pem-deploy did not write
        +-- OutputIsInputError the target is an input of the same run
        +-- OutputWriteError   the file system refused the write (full disk, read-only, permission)
"""

from __future__ import annotations


class PemDeployError(Exception):
    """Base class of every error pem-deploy raises on purpose (bad input, file, config, argument)."""

    exit_code: int = 2


class UsageError(PemDeployError, ValueError):
    """A command-line or API argument is out of range or inconsistent with another one."""


class ArtifactError(PemDeployError):
    """A model artifact (model file + sidecar JSON) is missing, malformed, or does not fit here.

    ``runtime.errors.ArtifactError`` is this class, so ``except ArtifactError`` catches sidecar
    schema errors (:class:`SidecarError`) raised by the runtime, ``pem-deploy check`` and export.
    """


class SidecarError(ArtifactError, ValueError):
    """A sidecar violates the artifact schema. ``source`` is the file, ``field`` the JSON path
    (``input.std[1]``; ``None`` when the file as a whole is at fault)."""

    def __init__(self, source: str, field: str | None, problem: str):
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field} " if field else f"{source}: "
        super().__init__(one_line(where + problem))


class OutputError(PemDeployError):
    """An output of a run cannot be written as asked; the message names the path (contract/output.py)."""


class OutputExistsError(OutputError):
    """The target already holds a file or folder this tool did not write (or a file given
    explicitly): refused unless the caller opts in (``--exist-ok`` / ``--overwrite``)."""


class OutputIsInputError(OutputError):
    """The target is (or lies inside) an input of the same run: refused whatever the flags."""


class OutputWriteError(OutputError):
    """The file system refused the write (full disk, read-only folder, permission); the target
    was left as it was."""


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
