"""Distributed training and evaluation on ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT] -m cli train ...`` sets
``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT``;
:func:`init_distributed` then joins the process group from ``env://`` (NCCL on CUDA, gloo on
CPU). Without those variables (or with ``WORLD_SIZE=1``) everything runs in one process and no
process group is created.

Norms: :func:`convert_sync_batch_norm` turns the BatchNorm layers the official code runs as
SyncBN into ``nn.SyncBatchNorm`` (torch's own layer). torch's SyncBN only runs on GPUs, so on
CPU (gloo) the converted layers use :class:`GlooSyncBatchNorm`, a subclass whose forward gathers
the per-channel sums with a differentiable ``torch.distributed.all_reduce``: the
same statistics and gradients as full-batch BatchNorm, slower, for tests and CPU clusters.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

SyncBNMode = Literal["official", "all", "off"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and shows progress."""
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def current_context() -> DistContext:
    """The context of an initialised process group (single process when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        )
    return DistContext()


def init_distributed(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by the environment (``env://``) if ``WORLD_SIZE > 1``.

    The backend is NCCL when training on CUDA (``device`` None / ``"auto"`` / ``"cuda"``
    with a GPU), gloo otherwise. Each rank uses ``cuda:LOCAL_RANK``. Idempotent: an existing
    process group is reused.
    """
    if dist.is_available() and dist.is_initialized():
        return current_context()
    if env_world_size() <= 1:
        return DistContext()
    if not dist.is_available():  # pragma: no cover - torch without distributed support
        from pem.config import ConfigError

        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = _wants_cuda(device)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo",
        init_method="env://",
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return current_context()


def _wants_cuda(device: str | torch.device | None) -> bool:
    if device is None or str(device) == "auto":
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def rank_device(device: str | torch.device | None, ctx: DistContext) -> torch.device:
    """The device of this rank: ``device`` (default CUDA when available, else CPU), on GPU runs
    with several ranks ``cuda:LOCAL_RANK`` unless an index is given."""
    if device is None or str(device) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", ctx.local_rank) if ctx.distributed else torch.device("cuda")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and ctx.distributed:
        return torch.device("cuda", ctx.local_rank)
    return dev


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Collectives used by the trainer and the evaluator


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum of ``values`` over ranks, on ``values``' device (a copy; unchanged in one process).

    The collective runs on the backend's device (the current GPU for NCCL, CPU for gloo).
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values.clone()
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    out = values.to(device, copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(values.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ---------------------------------------------------------------------------------------------
# SyncBatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of every rank's input is the summed gradient."""

    @staticmethod
    def forward(ctx: Any, values: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = values.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=ctx.group)
        return out, None


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm for CPU tensors (gloo), e.g. for tests; torch's ``nn.SyncBatchNorm`` (and
    DDP with it) accepts only GPU modules.

    Same state as ``nn.SyncBatchNorm`` (it is one, converted in place). In training inside a
    process group of several ranks it all-reduces per-channel (count, sum, sum of squares) with
    an autograd-aware ``all_reduce``, normalises with the biased
    global variance and updates the running statistics with the unbiased one, as BatchNorm over
    the concatenated batch does; otherwise it is plain BatchNorm.
    """

    process_group: Any = None

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if (
            input.device.type != "cpu"
            or not self.training
            or not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
        ):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        # Sums in float64: E[x^2] - E[x]^2 stays accurate to float32 precision.
        x64 = input.double()
        count = torch.tensor([float(input.numel() // input.shape[1])], dtype=torch.float64)
        stats = torch.cat([count, x64.sum(dims), (x64 * x64).sum(dims)])
        stats = _AllReduceSum.apply(stats, self.process_group or dist.group.WORLD)
        c = self.num_features
        total = stats[0]
        mean64 = stats[1 : 1 + c] / total
        var64 = (stats[1 + c :] / total - mean64 * mean64).clamp_min(0)
        mean, var = mean64.to(input.dtype), var64.to(input.dtype)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = (var64.detach() * (total / (total - 1).clamp_min(1))).to(input.dtype)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        shape = [1, c] + [1] * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _sync_batch_norm(module: nn.Module, cpu: bool) -> nn.Module:
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if cpu:
        for m in converted.modules():
            if type(m) is nn.SyncBatchNorm:
                m.__class__ = GlooSyncBatchNorm  # same state, a forward that runs on CPU
    return converted


def official_sync_bn_modules(model: nn.Module) -> list[str]:
    """Names of the submodules whose BatchNorm the official configs run as SyncBN.

    The pixel decoder (``SEM_SEG_HEAD.NORM: SyncBN``), every PEM-CA token projection
    (``LocalRepresentation.bn`` is ``nn.SyncBatchNorm`` in the official code) and the ResNet
    backbone when its config says ``norm="SyncBN"`` (Cityscapes). The STDC backbone and
    FrozenBN backbones stay as they are.
    """
    names = ["sem_seg_head.pixel_decoder"]
    names += [
        name
        for name, module in model.named_modules()
        if name.startswith("sem_seg_head.predictor") and name.endswith(".feature_proj")
    ]
    config = getattr(model, "config", None)
    if config is not None and config.backbone.norm == "SyncBN":
        names.insert(0, "backbone")
    return names


def convert_sync_batch_norm(model: nn.Module, mode: SyncBNMode, device: torch.device) -> list[str]:
    """Turn BatchNorm into SyncBatchNorm in place: ``official`` submodules, ``all`` or ``off``.

    Returns the converted submodule names. Call it only when the world size is > 1 (a single
    process has nothing to synchronise), before wrapping in DDP and building the optimizer.
    """
    if mode == "off":
        return []
    cpu = device.type == "cpu"
    names = [""] if mode == "all" else official_sync_bn_modules(model)
    for name in names:
        if not name:
            _sync_batch_norm(model, cpu)
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _sync_batch_norm(getattr(parent, child), cpu))
    return names


def batch_norm_types(model: nn.Module) -> dict[str, str]:
    """``{module name: class name}`` of every normalisation layer with batch statistics."""
    from pem.norm import FrozenBatchNorm2d

    kinds = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)
    return {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, kinds)}


def shard_slice(items: Sequence[Any] | Iterable[Any], rank: int, world_size: int) -> list[Any]:
    """Rank ``rank``'s contiguous part of ``items`` (equal parts; ``len`` divisible by the world)."""
    items = list(items)
    if len(items) % world_size:
        raise ValueError(f"{len(items)} items do not split into {world_size} equal shards")
    n = len(items) // world_size
    return items[rank * n : (rank + 1) * n]


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
