"""Typed errors of the runtime; every message is one line naming the input or artifact at fault."""

from __future__ import annotations

import importlib
from types import ModuleType

from contract.errors import ArtifactError, PemDeployError, SidecarError

__all__ = [
    "ArtifactError",
    "BackendUnavailableError",
    "InputError",
    "NonFiniteOutputError",
    "OutputRangeError",
    "RuntimeToolError",
    "SidecarError",
    "import_optional",
]


class RuntimeToolError(PemDeployError):
    """Base class of the runtime's errors."""


class InputError(RuntimeToolError, ValueError):
    """An input image / video / folder is unusable (corrupt, empty, wrong channels or depth...)."""


# ArtifactError (a model artifact or its sidecar is missing, malformed, or does not fit this
# machine) and its SidecarError (the sidecar breaks the schema) live in contract.errors, shared
# with export; they are re-exported here so that ``from runtime.errors import ArtifactError`` works.


class OutputRangeError(RuntimeToolError, ValueError):
    """A result holds values an output file cannot represent (e.g. a label id over 65535)."""


class NonFiniteOutputError(OutputRangeError):
    """A model output holds NaN or Inf (a broken artifact, e.g. an FP16 / INT8 overflow): the
    result would be silently wrong (NaN scores make every segment vanish), so none is made."""


class BackendUnavailableError(ArtifactError):
    """The backend an artifact needs (onnxruntime, TensorRT, CUDA) is not installed here."""


def import_optional(name: str, missing: type[RuntimeToolError], message: str) -> ModuleType:
    """The module ``name`` of an optional dependency, or ``missing(message)`` (one line saying how
    to install it, without the ImportError's traceback) when it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise missing(message) from None
