"""The one exception type of the calibration API."""

from __future__ import annotations

from export.errors import ExportError


class CalibrationError(ExportError):
    """Calibration was given a bad argument, file or folder, or failed.

    The message is one line naming the argument or file at fault (the CLI prints it as
    ``error: <message>`` and exits with status 2). It is an :class:`ExportError`, so that
    ``pem-deploy export --precision int8`` reports calibration failures like export failures.
    """
