"""Sidecars built by export's own ``build_sidecar`` for the tests that need one without an export."""

from typing import Any

from export.metadata import build_sidecar
from pem.config import PEMConfig, get_preset

# What ``pem-deploy export`` of the tiny semantic preset would pass, less the config (see below).
SIDECAR_DEFAULTS: dict[str, Any] = {
    "head": "semantic",
    "precision": "fp32",
    "preprocess": "none",
    "batch": 1,
    "dynamic": False,
    "opset": 19,
    "ir_version": 9,
    "model_file": "model.onnx",
    "source": {},
    "onnx_info": {},
}


def tiny_sidecar(config: PEMConfig | None = None, **fields: Any) -> dict[str, Any]:
    """``build_sidecar`` of ``config`` (default: the ``cityscapes-semantic-tiny`` preset) with
    :data:`SIDECAR_DEFAULTS`; ``fields`` override any of them or add ``int8``/``extra``."""
    config = config if config is not None else get_preset("cityscapes-semantic-tiny")
    return build_sidecar(config=config, **{**SIDECAR_DEFAULTS, **fields})
