"""Typed configuration for PEM models and the named presets for every paper row.

A :class:`PEMConfig` fully describes a model (architecture, classes, task and the input size it
is deployed at). Presets are plain functions of their name: no registry, no global mutable state.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from contract.errors import PemDeployError
from pem.datasets_meta import (
    ADE20K_NUM_CLASSES,
    ADE20K_PANOPTIC_THING_IDS,
    CITYSCAPES_CLASSES,
    CITYSCAPES_THING_IDS,
)

BackboneName = Literal["resnet50", "stdc"]
NormName = Literal["BN", "SyncBN", "FrozenBN"]
Task = Literal["semantic", "panoptic"]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class ConfigError(PemDeployError, ValueError):
    """A configuration or preset name is invalid."""


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone choice.

    ``resnet50`` is the detectron2 ResNet-50 (stride in the 3x3 conv).
    ``stdc`` is STDCNet with ``stdc_layers`` blocks per stage ([2, 2, 2] = STDC1, [4, 5, 3] = STDC2)
    and ``stdc_base`` channels (64 in the official models).

    ``norm`` is the backbone's normalisation during training (official ``RESNETS.NORM``):
    ``"BN"`` trainable BatchNorm with per-device statistics, ``"SyncBN"`` the same but with
    statistics over all devices of a distributed run, ``"FrozenBN"`` fixed statistics and affine
    (not trained). In eval mode all three compute the same function. The STDC backbone is built
    with plain BN by the official code whatever its config says (``"BN"``).
    """

    name: BackboneName = "resnet50"
    stdc_layers: tuple[int, ...] = (2, 2, 2)
    stdc_base: int = 64
    stdc_block_num: int = 4
    norm: NormName = "BN"

    def __post_init__(self) -> None:
        if self.norm not in ("BN", "SyncBN", "FrozenBN"):
            raise ConfigError(f"backbone norm must be BN, SyncBN or FrozenBN, got {self.norm!r}")

    @property
    def out_channels(self) -> tuple[int, int, int, int]:
        """Channels of res2..res5 (strides 4, 8, 16, 32)."""
        if self.name == "resnet50":
            return (256, 512, 1024, 2048)
        b = self.stdc_base
        return (b, b * 4, b * 8, b * 16)


@dataclass(frozen=True)
class PixelDecoderConfig:
    """Efficient multi-scale pixel decoder (CSM + deformable layers)."""

    conv_dim: int = 128
    mask_dim: int = 256


@dataclass(frozen=True)
class TransformerDecoderConfig:
    """PEM transformer decoder; ``num_layers`` excludes the query-only prediction (DEC_LAYERS - 1)."""

    hidden_dim: int = 256
    num_queries: int = 100
    num_heads: int = 8
    dim_feedforward: int = 2048
    num_layers: int = 6
    num_feature_levels: int = 3


@dataclass(frozen=True)
class InferenceConfig:
    """Post-processing thresholds (Mask2Former panoptic rules)."""

    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8


@dataclass(frozen=True)
class PEMConfig:
    """A complete PEM model description.

    ``input_size`` is the (height, width) the model is deployed and counted at; both must be
    multiples of 32 because the pixel decoder upsamples by exact factors of two.
    ``thing_ids`` are the contiguous class ids that are "things" (instances) for panoptic fusion.
    """

    name: str = "custom"
    task: Task = "semantic"
    num_classes: int = 19
    class_names: tuple[str, ...] = ()
    thing_ids: tuple[int, ...] = ()
    input_size: tuple[int, int] = (1024, 2048)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    transformer_decoder: TransformerDecoderConfig = field(default_factory=TransformerDecoderConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD

    def __post_init__(self) -> None:
        h, w = self.input_size
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            raise ConfigError(f"input_size must be positive multiples of 32, got {h}x{w}")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        bad = [t for t in self.thing_ids if not 0 <= t < self.num_classes]
        if bad:
            raise ConfigError(f"thing_ids out of range: {bad}")
        td = self.transformer_decoder
        if td.hidden_dim % td.num_heads:
            raise ConfigError(f"hidden_dim {td.hidden_dim} not divisible by num_heads {td.num_heads}")

    def replace(self, **changes: Any) -> PEMConfig:
        """Return a copy with top-level fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PEMConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        nested = {
            "backbone": BackboneConfig,
            "pixel_decoder": PixelDecoderConfig,
            "transformer_decoder": TransformerDecoderConfig,
            "inference": InferenceConfig,
        }
        try:
            kwargs: dict[str, Any] = {}
            for key, value in data.items():
                if key in nested:
                    sub = nested[key]
                    kwargs[key] = sub(**{k: _tuplify(v) for k, v in value.items()})
                else:
                    kwargs[key] = _tuplify(value)
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"invalid config: {exc}") from None


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


_BACKBONES: dict[str, BackboneConfig] = {
    "r50": BackboneConfig(name="resnet50"),
    "stdc1": BackboneConfig(name="stdc", stdc_layers=(2, 2, 2)),
    "stdc2": BackboneConfig(name="stdc", stdc_layers=(4, 5, 3)),
}

# Input sizes the paper counts FLOPs / FPS at (Cityscapes full resolution; ADE20K test short side).
_DATASET_SIZES = {
    ("cityscapes", "semantic"): (1024, 2048),
    ("cityscapes", "panoptic"): (1024, 2048),
    ("ade20k", "semantic"): (512, 512),
    ("ade20k", "panoptic"): (640, 640),
}


def _dataset_classes(dataset: str, task: Task) -> dict[str, Any]:
    if dataset == "cityscapes":
        return {
            "num_classes": len(CITYSCAPES_CLASSES),
            "class_names": tuple(name for name, _ in CITYSCAPES_CLASSES),
            "thing_ids": CITYSCAPES_THING_IDS if task == "panoptic" else (),
        }
    # ADE20K: the thing/stuff split of the official panoptic metadata (the dataset's panoptic
    # json, when present, supplies the same split at training time); names come from the dataset.
    things = ADE20K_PANOPTIC_THING_IDS if task == "panoptic" else ()
    return {"num_classes": ADE20K_NUM_CLASSES, "class_names": (), "thing_ids": things}


TINY_BACKBONE = BackboneConfig(name="stdc", stdc_layers=(1, 1, 1), stdc_base=16)
TINY_PIXEL_DECODER = PixelDecoderConfig(conv_dim=32, mask_dim=32)
TINY_TRANSFORMER_DECODER = TransformerDecoderConfig(
    hidden_dim=64, num_queries=20, num_heads=4, dim_feedforward=128, num_layers=3
)


def preset_names() -> list[str]:
    """All preset names: ``{cityscapes,ade20k}-{semantic,panoptic}-{r50,stdc1,stdc2}`` and the tiny ones."""
    names = [
        f"{dataset}-{task}-{backbone}"
        for dataset in ("cityscapes", "ade20k")
        for task in ("semantic", "panoptic")
        for backbone in ("r50", "stdc1", "stdc2")
    ]
    return [*names, "cityscapes-semantic-tiny", "cityscapes-panoptic-tiny"]


def get_preset(name: str) -> PEMConfig:
    """Return the config of a named preset.

    The ``*-tiny`` presets are small CPU-friendly models (a narrow STDC, 20 queries, 3 decoder
    layers) at 256x512 for tests, demos and training on a laptop; the others follow the paper.
    """
    parts = name.split("-")
    if len(parts) != 3 or name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    dataset, task, backbone = parts
    classes = _dataset_classes(dataset, task)  # type: ignore[arg-type]
    if backbone == "tiny":
        return PEMConfig(
            name=name,
            task=task,  # type: ignore[arg-type]
            input_size=(256, 512),
            backbone=TINY_BACKBONE,
            pixel_decoder=TINY_PIXEL_DECODER,
            transformer_decoder=TINY_TRANSFORMER_DECODER,
            **classes,
        )
    backbone_cfg = _BACKBONES[backbone]
    if backbone_cfg.name == "resnet50":
        # Official RESNETS.NORM: SyncBN for the Cityscapes configs, FrozenBN (detectron2's
        # default) for the ADE20K ones.
        backbone_cfg = dataclasses.replace(
            backbone_cfg, norm="SyncBN" if dataset == "cityscapes" else "FrozenBN"
        )
    return PEMConfig(
        name=name,
        task=task,  # type: ignore[arg-type]
        input_size=_DATASET_SIZES[(dataset, task)],
        backbone=backbone_cfg,
        **classes,
    )
