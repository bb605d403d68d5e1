"""The one exception type of the export API."""

from __future__ import annotations

from contract.errors import PemDeployError


class ExportError(PemDeployError, RuntimeError):
    """An export, check or lint step was given a bad argument or file, or failed.

    The message is one line and names the argument or file at fault, so that the CLI can print it
    as ``error: <message>`` without a traceback.
    """
