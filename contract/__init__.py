"""The torch-free contract shared by every package: the error root and the artifact schema.

Nothing here imports torch, onnx or onnxruntime, so that ``pem``, ``export``, ``calib`` and
``runtime`` can all depend on it without breaking the one-way dependency rule.
"""

from contract.errors import PemDeployError, UsageError

__all__ = ["PemDeployError", "UsageError"]
