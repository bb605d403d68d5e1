"""The tiny panoptic preset at 64x128 and its exported graphs, shared by the export tests (torch)."""

import functools

from export.pipeline import ExportOptions, export_graph
from export.source import load_source
from pem.config import InferenceConfig

H, W = 64, 128


@functools.cache
def tiny_source():
    """The tiny panoptic preset at 64x128 (shared by the export test modules; do not modify)."""
    source = load_source(preset="cityscapes-panoptic-tiny", height=H, width=W, seed=0)
    # Random weights never reach a 0.8 class score: keep every query so the panoptic outputs matter.
    source.config = source.config.replace(inference=InferenceConfig(object_mask_threshold=0.0))
    source.model.config = source.config
    return source


@functools.cache
def tiny_graph(head: str, deform_impl: str = "native"):
    """Exported graph and context of :func:`tiny_source` (cached: exporting takes seconds)."""
    model, context, _ = export_graph(tiny_source(), ExportOptions(head=head, deform_impl=deform_impl))
    return model, context
