"""Training configuration (:class:`TrainConfig`) and the recipe of every model preset.

The paper presets follow the official recipe (``pem-official-code-notes.md`` 1.2): AdamW,
lr 7e-4 (Cityscapes) / 4e-4 (ADE20K), backbone x0.1, weight decay 0.05, cosine, grad clip 0.01,
batch 32, 90k / 160k iterations, scale jitter 0.5-2.0 and crops 512x1024 / 512x512 / 640x640.
The ``*-tiny`` presets get a CPU recipe for the synthetic set: no pretrained backbone (so no
backbone multiplier), a short warm-up, small crops, few points and a few hundred iterations.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from pem.config import (
    ConfigError,
    check_choice,
    check_fields,
    check_float,
    check_int,
    check_sequence,
    preset_eval_size,
    preset_names,
    strict_fields,
)
from pem.data.transforms import AugmentConfig
from pem.train.criterion import LossConfig

#: The largest learning rate accepted (lr / Adam's bias correction must fit a float32).
MAX_LR = 1e30


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run except the model and the data.

    ``batch_size`` images per optimizer step, split into ``accumulate`` micro-batches (gradient
    accumulation for small machines); a micro-batch needs >= 2 images because the pixel
    decoder's CSM has BatchNorm on 1x1 maps. ``amp``: ``None`` = mixed precision when on CUDA.
    ``test_short_side``: evaluation resizes the short side to this (None = native size).
    ``eval_period`` / ``checkpoint_period``: every N iterations (0 = only at the end).

    Distributed runs (``torchrun``): ``batch_size`` stays the *global* batch; each of the N ranks
    takes ``batch_size / accumulate / N`` images of every micro-batch. ``sync_bn`` chooses which
    BatchNorm layers share their batch statistics across ranks: ``"official"`` where the
    official configs use SyncBN (pixel decoder, PEM-CA token projections, the R50 backbone of
    the Cityscapes configs), ``"all"`` every BatchNorm (then the result does not depend on the
    number of ranks), ``"off"`` none (per-rank statistics). A single process ignores it.
    """

    iterations: int = 90_000
    batch_size: int = 32
    accumulate: int = 1
    lr: float = 7e-4
    lr_end: float = 0.0
    warmup_iters: int = 0
    backbone_multiplier: float = 0.1
    weight_decay: float = 0.05
    clip_grad_norm: float = 0.01
    amp: bool | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    test_short_side: int | None = None
    test_max_size: int = 4096
    seed: int = 0
    eval_period: int = 0
    checkpoint_period: int = 1000
    log_period: int = 20
    num_workers: int = 0
    sync_bn: str = "official"

    def __post_init__(self) -> None:
        check_choice("sync_bn", self.sync_bn, ("official", "all", "off"))
        check_int("iterations", self.iterations, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("accumulate", self.accumulate, 1)
        if self.batch_size % self.accumulate:
            raise ConfigError(
                f"accumulate: batch_size {self.batch_size} "
                f"is not divisible into {self.accumulate} micro-batches"
            )
        if self.micro_batch < 2:
            raise ConfigError(
                f"batch_size: micro-batch of {self.micro_batch} image: need >= 2 per micro-batch "
                "(BatchNorm on the CSM's 1x1 maps); lower accumulate or raise batch_size"
            )
        # Above MAX_LR the optimizer's float32 arithmetic overflows before the loss can diverge.
        check_float("lr", self.lr, 0.0, MAX_LR, exclusive_min=True)
        check_float("lr_end", self.lr_end, 0.0)
        if self.lr_end > self.lr:
            raise ConfigError(f"lr_end: {self.lr_end} is above lr {self.lr}")
        check_int("warmup_iters", self.warmup_iters, 0)
        for key in ("backbone_multiplier", "weight_decay", "clip_grad_norm"):
            check_float(key, getattr(self, key), 0.0)
        if self.amp is not None and not isinstance(self.amp, bool):
            raise ConfigError(f"amp: expected true, false or null, got {self.amp!r}")
        if self.test_short_side is not None:
            check_int("test_short_side", self.test_short_side, 32)
        check_int("test_max_size", self.test_max_size, 32)
        check_int("seed", self.seed, 0)
        for key in ("eval_period", "checkpoint_period", "num_workers"):
            check_int(key, getattr(self, key), 0)
        check_int("log_period", self.log_period, 1)
        _check_augment(self.augment)
        _check_loss(self.loss)

    @property
    def micro_batch(self) -> int:
        """Images per forward pass (over all ranks of a distributed run)."""
        return self.batch_size // self.accumulate

    def rank_batch(self, world_size: int) -> int:
        """Images per forward pass on each of ``world_size`` ranks; :class:`ConfigError` if the
        micro-batch does not split evenly or a rank would get too few images."""
        if self.micro_batch % world_size:
            raise ConfigError(
                f"batch_size {self.batch_size} / accumulate {self.accumulate} = {self.micro_batch} images "
                f"per micro-batch do not split over {world_size} ranks; use a global batch divisible by "
                f"{world_size * self.accumulate}"
            )
        per_rank = self.micro_batch // world_size
        if per_rank < 2 and (world_size == 1 or self.sync_bn == "off"):
            raise ConfigError(
                f"{per_rank} image per rank and micro-batch with unsynchronised BatchNorm (the CSM's "
                "1x1 maps need >= 2): raise batch_size or use sync_bn official"
            )
        return per_rank

    def replace(self, **changes: Any) -> TrainConfig:
        """Copy with fields replaced; ``augment`` / ``loss`` may be given as dicts of changes."""
        for key in ("augment", "loss"):
            if isinstance(changes.get(key), dict):
                changes[key] = dataclasses.replace(getattr(self, key), **_tuplify(changes[key]))
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise ConfigError(f"invalid training option: {exc}") from None

    def with_overrides(
        self, *, crop_size: tuple[int, int] | None = None, num_points: int | None = None, **fields: Any
    ) -> TrainConfig:
        """Copy with a user's settings (``pem-deploy train``'s flags); ``None`` keeps the recipe's value.

        ``fields`` are top-level fields by name; ``crop_size`` goes into ``augment`` and
        ``num_points`` into ``loss``. Raises :class:`ConfigError` for an unknown field.
        """
        changes: dict[str, Any] = {name: value for name, value in fields.items() if value is not None}
        if crop_size is not None:
            changes["augment"] = {"crop_size": crop_size}
        if num_points is not None:
            changes["loss"] = {"num_points": num_points}
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "training config") -> TrainConfig:
        """Inverse of :meth:`to_dict`, strict: every field present and known, values in range.

        Raises :class:`ConfigError` naming ``source`` and the field.
        """
        try:
            kwargs = strict_fields(cls, data, "")
            kwargs["augment"] = AugmentConfig(**strict_fields(AugmentConfig, kwargs["augment"], "augment."))
            kwargs["loss"] = LossConfig(**strict_fields(LossConfig, kwargs["loss"], "loss."))
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _check_augment(aug: AugmentConfig) -> None:
    if not isinstance(aug, AugmentConfig):
        raise ConfigError(f"augment: expected an AugmentConfig, got {aug!r}")
    check_int("augment.short_side", aug.short_side, 1)
    lo, hi = check_sequence("augment.scale_range", aug.scale_range, 2)
    check_float("augment.scale_range[0]", lo, 0.0, exclusive_min=True)
    check_float("augment.scale_range[1]", hi, 0.0, exclusive_min=True)
    if lo > hi:
        raise ConfigError(f"augment.scale_range: {lo} > {hi}")
    check_float("augment.scale_step", aug.scale_step, 0.0)
    check_int("augment.max_size", aug.max_size, 32)
    ch, cw = check_sequence("augment.crop_size", aug.crop_size, 2)
    check_int("augment.crop_size[0]", ch, 32)
    check_int("augment.crop_size[1]", cw, 32)
    check_float(
        "augment.single_category_max_area", aug.single_category_max_area, 0.0, 1.0, exclusive_min=True
    )
    for key in ("color", "flip"):
        if not isinstance(getattr(aug, key), bool):
            raise ConfigError(f"augment.{key}: expected true or false, got {getattr(aug, key)!r}")


def _check_loss(loss: LossConfig) -> None:
    if not isinstance(loss, LossConfig):
        raise ConfigError(f"loss: expected a LossConfig, got {loss!r}")
    check_fields(loss, "loss.")
    if not isinstance(loss.deep_supervision, bool):
        raise ConfigError(f"loss.deep_supervision: expected true or false, got {loss.deep_supervision!r}")


def _tuplify(data: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


# The CPU recipe of the tiny presets on the synthetic set (256x512 images): see README
# "Training and evaluation" for the measured result.
TINY_RECIPE = TrainConfig(
    iterations=500,
    batch_size=8,
    lr=3e-3,
    warmup_iters=30,
    backbone_multiplier=1.0,
    clip_grad_norm=0.01,
    augment=AugmentConfig(
        short_side=256, scale_range=(0.5, 1.5), scale_step=0.125, max_size=1024, crop_size=(128, 256)
    ),
    loss=LossConfig(num_points=2048),
    checkpoint_period=200,
    log_period=10,
)


def train_preset(name: str) -> TrainConfig:
    """The training recipe of model preset ``name`` (see :func:`pem.config.preset_names`)."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    dataset, task, backbone = name.split("-")
    test = preset_eval_size(name)  # evaluation during training uses the preset's test size
    if backbone == "tiny":
        return TINY_RECIPE.replace(test_short_side=test.short_side, test_max_size=test.max_size)
    if dataset == "cityscapes":
        return TrainConfig(test_short_side=test.short_side, test_max_size=test.max_size)
    crop = (512, 512) if task == "semantic" else (640, 640)
    return TrainConfig(
        iterations=160_000,
        lr=4e-4,
        lr_end=1e-6,
        augment=AugmentConfig(
            short_side=crop[0], scale_range=(0.5, 2.0), max_size=4 * crop[0], crop_size=crop
        ),
        test_short_side=test.short_side,
        test_max_size=test.max_size,
    )
