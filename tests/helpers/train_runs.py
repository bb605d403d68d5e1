"""The training run of the unit tests: the tiny presets' CPU recipe cut down to a few seconds,
and the instruments the distributed tests compare runs with."""

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pem.train.config import TINY_RECIPE
from pem.train.optim import scaled_groups

# A run small enough for unit tests: 64x128 images, whole-image crops, few points, no warm-up.
TINY_RUN = TINY_RECIPE.replace(
    iterations=4,
    batch_size=2,
    lr=1e-3,
    warmup_iters=0,
    augment={
        "short_side": 64,
        "scale_range": (0.75, 1.0),
        "scale_step": 0.25,
        "max_size": 256,
        "crop_size": (64, 128),
    },
    loss={"num_points": 64},
    checkpoint_period=2,
    log_period=1,
)


@contextlib.contextmanager
def sgd_optimizer() -> Iterator[None]:
    """Trainers built inside the block train with plain SGD instead of AdamW.

    Its update, ``lr * (gradient + weight_decay * w)``, is linear in the gradient, so two runs
    whose gradients agree to rounding end with weights that agree to rounding. AdamW's is not:
    a parameter whose gradient is at rounding level (a bias in front of a BatchNorm) moves by
    about +-lr whatever the gradient's size, in the direction of its rounding noise.
    """
    import pem.train.trainer as trainer_module

    def build(
        model: nn.Module, lr: float, backbone_multiplier: float, weight_decay: float
    ) -> torch.optim.SGD:
        return torch.optim.SGD(scaled_groups(model, lr, backbone_multiplier, weight_decay), lr=lr)

    original = trainer_module.build_optimizer
    trainer_module.build_optimizer = build
    try:
        yield
    finally:
        trainer_module.build_optimizer = original


def record_gradients(trainer: Any) -> list[dict[str, torch.Tensor]]:
    """Record every step's gradients, after the backward (and DDP's all-reduce), before clipping.

    Returns the list the trainer appends ``{parameter name: gradient}`` to, one dict per step.
    """
    steps: list[dict[str, torch.Tensor]] = []
    scaler = trainer.scaler
    unscale = scaler.unscale_

    def observed(optimizer: torch.optim.Optimizer) -> None:
        unscale(optimizer)
        steps.append(
            {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        )

    scaler.unscale_ = observed
    return steps


def worst_difference(
    got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rtol: float, floor: float
) -> tuple[str, float, float] | None:
    """The tensor that breaks ``||got - want|| <= rtol * ||want|| + floor`` (L2 norms over the
    tensor) by the most, as (name, its difference, its tolerance), or None when all hold."""
    assert set(got) == set(want), sorted(set(got) ^ set(want))[:5]
    worst: tuple[float, str, float, float] | None = None
    for name, ref in want.items():
        ref = ref.double()
        diff = float((got[name].double() - ref).norm())
        tol = rtol * float(ref.norm()) + floor
        if diff > tol and (worst is None or diff / tol > worst[0]):
            worst = (diff / tol, name, diff, tol)
    return None if worst is None else worst[1:]


def largest_norm(tensors: dict[str, torch.Tensor]) -> float:
    """The largest L2 norm among ``tensors`` (the scale of a tolerance floor)."""
    return max(float(t.double().norm()) for t in tensors.values())


def assert_tensors_close(
    got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rtol: float, floor: float, what: str
) -> None:
    """Fail with the worst tensor, its difference and its tolerance (see :func:`worst_difference`)."""
    worst = worst_difference(got, want, rtol, floor)
    if worst is not None:
        name, diff, tol = worst
        scale = float(want[name].double().norm())
        largest = float((got[name].double() - want[name].double()).abs().max())
        raise AssertionError(
            f"{what}: {name} differs by {diff:.3g} (L2; largest element {largest:.3g}) > tolerance "
            f"{tol:.3g} (= {rtol:g} x its reference's L2 norm {scale:.3g} + {floor:.3g})"
        )
