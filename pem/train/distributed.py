"""Former home of the distributed helpers, kept so that ``pem.train.distributed`` imports still work.

The helpers live in :mod:`pem.distributed`, beside the evaluation that uses them as much as the
trainer does (so ``pem.evaluation`` needs nothing from ``pem.train``). New code imports
:mod:`pem.distributed`; this module only re-exports its public names (the same objects).
"""

from __future__ import annotations

from pem.distributed import (
    DistContext,
    GlooSyncBatchNorm,
    SyncBNMode,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    batch_norm_types,
    broadcast_object,
    convert_sync_batch_norm,
    current_context,
    env_world_size,
    init_distributed,
    official_sync_bn_modules,
    rank_device,
    shard_slice,
    shutdown,
)

__all__ = [
    "DistContext",
    "GlooSyncBatchNorm",
    "SyncBNMode",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "batch_norm_types",
    "broadcast_object",
    "convert_sync_batch_norm",
    "current_context",
    "env_world_size",
    "init_distributed",
    "official_sync_bn_modules",
    "rank_device",
    "shard_slice",
    "shutdown",
]
