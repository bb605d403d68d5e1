"""Typed configuration for PEM models and the named presets for every paper row.

A :class:`PEMConfig` fully describes a model (architecture, classes, task and the input size it
is deployed at). Presets are plain functions of their name: no registry, no global mutable state.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from contract.errors import PemDeployError
from contract.vocabulary import TASKS, Task
from pem.datasets_meta import (
    ADE20K_NUM_CLASSES,
    ADE20K_PANOPTIC_THING_IDS,
    CITYSCAPES_CLASSES,
    CITYSCAPES_THING_IDS,
)

BackboneName = Literal["resnet50", "stdc"]
NormName = Literal["BN", "SyncBN", "FrozenBN"]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class ConfigError(PemDeployError, ValueError):
    """A configuration or preset name is invalid."""


BACKBONE_NAMES: tuple[str, ...] = ("resnet50", "stdc")


def check_int(where: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``; else :class:`ConfigError` naming ``where``.

    Booleans and floats are refused (JSON ``true`` or ``2.5`` is not a channel count).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{where}: must be {bound}, got {value}")
    return value


def check_float(
    where: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_min: bool = False,
) -> float:
    """``value`` as a finite number in range; else :class:`ConfigError` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    number = float(value)
    low_bad = minimum is not None and (number <= minimum if exclusive_min else number < minimum)
    if not math.isfinite(number) or low_bad or (maximum is not None and number > maximum):
        low = "" if minimum is None else f"{'>' if exclusive_min else '>='} {minimum}"
        high = "" if maximum is None else f"<= {maximum}"
        bound = " and ".join(b for b in (low, high) if b)
        raise ConfigError(f"{where}: must be finite{' and ' + bound if bound else ''}, got {value!r}")
    return number


def check_choice(where: str, value: object, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``; else :class:`ConfigError` naming ``where``."""
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{where}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def int_field(default: int, minimum: int = 1, maximum: int | None = None) -> Any:
    """A dataclass field holding an int in ``[minimum, maximum]``, checked by :func:`check_fields`."""
    return field(
        default=default, metadata={"check": functools.partial(check_int, minimum=minimum, maximum=maximum)}
    )


def channels_field(default: int) -> Any:
    """A channel width (an :func:`int_field` in ``[1, 65536]``)."""
    return int_field(default, 1, 65536)


def float_field(default: float, minimum: float | None = None, maximum: float | None = None) -> Any:
    """A dataclass field holding a finite number in ``[minimum, maximum]`` (see :func:`check_fields`)."""
    return field(
        default=default, metadata={"check": functools.partial(check_float, minimum=minimum, maximum=maximum)}
    )


def check_fields(config: Any, prefix: str) -> None:
    """Check the :func:`int_field` / :func:`float_field` fields of dataclass ``config`` in declaration
    order; the first bad one raises :class:`ConfigError` naming ``{prefix}{field}``."""
    for f in dataclasses.fields(config):
        check = f.metadata.get("check")
        if check is not None:
            check(f"{prefix}{f.name}", getattr(config, f.name))


def check_sequence(where: str, value: object, length: int | None = None) -> tuple[Any, ...]:
    """``value`` as a tuple (optionally of exactly ``length`` items)."""
    if not isinstance(value, (tuple, list)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if length is not None and len(value) != length:
        raise ConfigError(f"{where}: expected {length} values, got {len(value)}")
    return tuple(value)


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
        check_choice("backbone.name", self.name, BACKBONE_NAMES)
        check_choice("backbone.norm", self.norm, ("BN", "SyncBN", "FrozenBN"))
        layers = check_sequence("backbone.stdc_layers", self.stdc_layers, 3)
        for i, n in enumerate(layers):
            check_int(f"backbone.stdc_layers[{i}]", n, 1, 64)
        check_int("backbone.stdc_base", self.stdc_base, 1, 4096)
        check_int("backbone.stdc_block_num", self.stdc_block_num, 2, 16)

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

    conv_dim: int = channels_field(128)
    mask_dim: int = channels_field(256)

    def __post_init__(self) -> None:
        check_fields(self, "pixel_decoder.")


@dataclass(frozen=True)
class TransformerDecoderConfig:
    """PEM transformer decoder; ``num_layers`` excludes the query-only prediction (DEC_LAYERS - 1)."""

    hidden_dim: int = channels_field(256)
    num_queries: int = int_field(100, 1, 100_000)
    num_heads: int = int_field(8, 1, 1024)
    dim_feedforward: int = int_field(2048, 1, 1 << 20)
    num_layers: int = int_field(6, 1, 1000)
    num_feature_levels: int = int_field(3, 1, 3)

    def __post_init__(self) -> None:
        check_fields(self, "transformer_decoder.")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"transformer_decoder.num_heads: hidden_dim {self.hidden_dim} "
                f"is not divisible by num_heads {self.num_heads}"
            )


@dataclass(frozen=True)
class InferenceConfig:
    """Post-processing thresholds (Mask2Former panoptic rules)."""

    object_mask_threshold: float = float_field(0.8, 0.0, 1.0)
    overlap_threshold: float = float_field(0.8, 0.0, 1.0)

    def __post_init__(self) -> None:
        check_fields(self, "inference.")


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
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"name: expected a non-empty string, got {self.name!r}")
        check_choice("task", self.task, TASKS)
        check_int("num_classes", self.num_classes, 1, 65535)
        size = check_sequence("input_size", self.input_size, 2)
        h = check_int("input_size[0]", size[0])
        w = check_int("input_size[1]", size[1])
        if h % 32 or w % 32:
            raise ConfigError(f"input_size: must be positive multiples of 32, got {h}x{w}")
        names = check_sequence("class_names", self.class_names)
        if any(not isinstance(n, str) or not n for n in names):
            raise ConfigError("class_names: every class name must be a non-empty string")
        if names and len(names) != self.num_classes:
            raise ConfigError(f"class_names: {len(names)} class names for {self.num_classes} classes")
        for i, t in enumerate(check_sequence("thing_ids", self.thing_ids)):
            check_int(f"thing_ids[{i}]", t, 0, self.num_classes - 1)
        for key, value in (("pixel_mean", self.pixel_mean), ("pixel_std", self.pixel_std)):
            for i, v in enumerate(check_sequence(key, value, 3)):
                if key == "pixel_std":
                    check_float(f"{key}[{i}]", v, 0.0, exclusive_min=True)
                else:
                    check_float(f"{key}[{i}]", v)
        for key, kind in (
            ("backbone", BackboneConfig),
            ("pixel_decoder", PixelDecoderConfig),
            ("transformer_decoder", TransformerDecoderConfig),
            ("inference", InferenceConfig),
        ):
            if not isinstance(getattr(self, key), kind):
                raise ConfigError(f"{key}: expected a {kind.__name__}, got {getattr(self, key)!r}")

    def replace(self, **changes: Any) -> PEMConfig:
        """Return a copy with top-level fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> PEMConfig:
        """Inverse of :meth:`to_dict`, strict: every field must be present and known.

        A missing, unknown, wrongly typed or out-of-range field raises :class:`ConfigError`
        naming ``source`` (the file) and the field, e.g. ``model.json: backbone.name: ...``.
        """
        nested = {
            "backbone": BackboneConfig,
            "pixel_decoder": PixelDecoderConfig,
            "transformer_decoder": TransformerDecoderConfig,
            "inference": InferenceConfig,
        }
        try:
            kwargs = strict_fields(cls, data, "")
            for key, sub in nested.items():
                kwargs[key] = sub(**strict_fields(sub, kwargs[key], f"{key}."))
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def strict_fields(kind: type, data: object, prefix: str) -> dict[str, Any]:
    """Keyword arguments for dataclass ``kind`` from a JSON object: exactly its fields, lists as tuples.

    Raises :class:`ConfigError` naming the first missing or unknown field (with ``prefix``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a JSON object, got {data!r}"[:200])
    names = [f.name for f in dataclasses.fields(kind)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field (known: {', '.join(names)})")
    missing = [k for k in names if k not in data]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: missing field")
    return {k: _tuplify(data[k]) for k in names}


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def estimate_forward_bytes(config: PEMConfig, height: int, width: int, batch: int = 1) -> int:
    """Rough upper estimate of the memory one forward pass (and its export) needs, in bytes.

    Activations per input pixel, float32: backbone features (x3 for the blocks' temporaries,
    plus the stride-2 stem), pixel-decoder maps, one stride-4 mask map per decoder layer, and the
    full-resolution post-processing (every query mask upsampled, then the class scores); plus
    three copies of the weights. Measured on the tiny preset it is about 2x the peak of an export,
    so it only refuses sizes that cannot fit.
    """
    bb, pd, td = config.backbone, config.pixel_decoder, config.transformer_decoder
    strides = (4, 8, 16, 32)
    floats = 3.0 + 2 * bb.out_channels[0] / 4  # the input and the stride-2 stem
    floats += 3 * sum(c / s**2 for c, s in zip(bb.out_channels, strides))
    floats += pd.conv_dim * 3 * sum(1 / s**2 for s in strides[1:]) + 2 * pd.mask_dim / 16
    floats += (td.num_layers + 1) * td.num_queries / 16
    floats += td.num_queries + config.num_classes + 1
    weights = 4 * (sum(bb.out_channels) * 64 * 9 + td.num_layers * td.hidden_dim * td.dim_feedforward * 4)
    return int(4 * floats * height * width * batch + 3 * weights)


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
        for task in TASKS
        for backbone in ("r50", "stdc1", "stdc2")
    ]
    return [*names, "cityscapes-semantic-tiny", "cityscapes-panoptic-tiny"]


@dataclass(frozen=True)
class EvalSize:
    """How evaluation resizes a preset's images: the short side to ``short_side`` (``None`` keeps
    the native size), the long side at most ``max_size``."""

    short_side: int | None = None
    max_size: int = 4096

    def __post_init__(self) -> None:
        if self.short_side is not None:
            check_int("short_side", self.short_side, 32)
        check_int("max_size", self.max_size, 32)


def preset_eval_size(name: str) -> EvalSize:
    """The test-time size of preset ``name``, used by evaluation and by the training recipe.

    ADE20K follows the paper's protocol: the short side resized to the deployed size (512
    semantic, 640 panoptic), the long side at most 4x that. Cityscapes (tiny presets included)
    is evaluated at its native size.
    """
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    dataset, task, _ = name.split("-")
    if dataset == "cityscapes":
        return EvalSize()
    side = _DATASET_SIZES[(dataset, task)][0]
    return EvalSize(short_side=side, max_size=4 * side)


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
