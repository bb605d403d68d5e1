"""Typed errors of the runtime; every message is one line naming the input or artifact at fault."""

from __future__ import annotations

from contract.errors import PemDeployError


class RuntimeToolError(PemDeployError):
    """Base class of the runtime's errors."""


class InputError(RuntimeToolError, ValueError):
    """An input image / video / folder is unusable (corrupt, empty, wrong channels or depth...)."""


class ArtifactError(RuntimeToolError):
    """A model artifact or its sidecar is missing, malformed, or does not fit this machine."""


class BackendUnavailableError(ArtifactError):
    """The backend an artifact needs (onnxruntime, TensorRT, CUDA) is not installed here."""
