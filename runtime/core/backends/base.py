"""The backend interface every runner implements."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.sidecar_records import IOSignature, TensorSignature


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

    def io_signature(self) -> IOSignature:
        """The model's inputs and outputs as this backend sees them (names, shapes, dtypes), for
        :meth:`contract.sidecar.Sidecar.check_against`."""

        def one(spec: TensorSpec) -> TensorSignature:
            dims = tuple(d if isinstance(d, int) and d > 0 else None for d in spec.shape)
            return TensorSignature(spec.name, dims, np.dtype(spec.dtype).name)

        model = getattr(self, "path", None)
        return IOSignature(
            tuple(one(s) for s in self.inputs),
            tuple(one(s) for s in self.outputs),
            Path(model).name if model is not None else self.name,
        )

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on host arrays; returns host arrays keyed by output name."""

    #: True when the model runs in host memory (CPU): there are no host<->device copies.
    host_memory: bool = False

    @property
    def copy_timing(self) -> str:
        """How :meth:`infer_timed` reports the copies: ``none`` (host memory: 0 ms), ``measured``
        or ``inside compute`` (this backend cannot separate them)."""
        return "none" if self.host_memory else "inside compute"

    def infer_timed(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """:meth:`infer` with its cost split in milliseconds: ``h2d``, ``compute``, ``d2h``.

        This default times the whole call as ``compute``; the copies are 0 in host memory and
        left out (inside ``compute``) otherwise. Backends that can separate them override it.
        """
        start = time.perf_counter()
        outputs = self.infer(inputs)
        timings = {"compute": (time.perf_counter() - start) * 1e3}
        if self.host_memory:
            timings.update(h2d=0.0, d2h=0.0)
        return outputs, timings

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device resources (optional)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
