"""Inference backends behind one interface: ``Backend.infer(inputs) -> outputs``."""

from runtime.core.backends.base import Backend, TensorSpec

__all__ = ["Backend", "TensorSpec"]
