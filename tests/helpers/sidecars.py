"""Sidecars built by export's own ``build_sidecar`` for the tests that need one without an export."""

from typing import Any

from contract.sidecar import Sidecar
from contract.sidecar_records import Provenance
from export.metadata import GraphInterface, build_sidecar
from pem.config import PEMConfig, get_preset


def tiny_spec(
    config: PEMConfig | None = None,
    *,
    head: str = "semantic",
    precision: str = "fp32",
    preprocess: str = "none",
    batch: int = 1,
    dynamic: bool = False,
    opset: int = 19,
    ir_version: int = 9,
    source: dict[str, Any] | None = None,
    onnx_info: dict[str, Any] | None = None,
    int8: dict[str, Any] | None = None,
) -> Sidecar:
    """``build_sidecar`` of ``config`` (default: the ``cityscapes-semantic-tiny`` preset) with what
    ``pem-deploy export`` of it would pass; the keywords override those."""
    config = config if config is not None else get_preset("cityscapes-semantic-tiny")
    interface = GraphInterface(config, head, precision, preprocess, batch, dynamic)
    provenance = Provenance(
        model_file="model.onnx",
        onnx={"opset": opset, "ir_version": ir_version, **(onnx_info or {})},
        source=source or {},
        int8=int8,
    )
    return build_sidecar(interface, provenance)


def tiny_sidecar(config: PEMConfig | None = None, **fields: Any) -> dict[str, Any]:
    """:func:`tiny_spec` as JSON-ready data (for tests that edit a sidecar before writing it)."""
    return tiny_spec(config, **fields).to_dict()
