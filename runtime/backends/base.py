"""The backend interface every runner implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``None`` or -1 for dynamic dims) and numpy dtype of a model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


class Backend(abc.ABC):
    """Runs one model. ``infer`` is safe to call from several threads at once."""

    name: str = "backend"
    # Filled by each backend's constructor from its model.
    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    @property
    def inputs(self) -> list[TensorSpec]:
        """Model inputs."""
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        """Model outputs."""
        return self._outputs

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on host arrays; returns host arrays keyed by output name."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device resources (optional)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
