"""Hostile model and training configs (pem.config, pem.train.config): every field missing, unknown,
wrongly typed or out of range, and bad JSON, each refused with one line naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pem.config import ConfigError, PEMConfig, get_preset
from pem.train.config import TrainConfig, train_preset
from tests.helpers.cli import assert_one_line_error, invoke
from tests.helpers.hostile_args import TINY, copy_checkpoint

# ---------------------------------------------------------------------------------------------
# Configs: every field missing, unknown, wrongly typed, out of range; bad JSON


_TINY_DICT = get_preset(TINY).to_dict()
_NESTED = ("backbone", "pixel_decoder", "transformer_decoder", "inference")


def _config_cases() -> Iterator[Any]:
    for key in _TINY_DICT:
        yield pytest.param(("drop", key, None), key, id=f"missing-{key}")
    for section in _NESTED:
        for key in _TINY_DICT[section]:
            yield pytest.param(
                ("drop", f"{section}.{key}", None), f"{section}.{key}", id=f"missing-{section}.{key}"
            )
    for section in ("", *_NESTED):
        where = f"{section}.surprise" if section else "surprise"
        yield pytest.param(("set", where, 1), where, id=f"unknown-{where}")
    bad_values = [
        ("task", "instance"),
        ("task", 3),
        ("name", ""),
        ("num_classes", 0),
        ("num_classes", -5),
        ("num_classes", 2.5),
        ("num_classes", "19"),
        ("num_classes", True),
        ("input_size", [100, 200]),
        ("input_size", [0, 0]),
        ("input_size", [256]),
        ("input_size", "256x512"),
        ("class_names", ["road"]),
        ("thing_ids", [99]),
        ("thing_ids", [-1]),
        ("pixel_mean", [1.0, 2.0]),
        ("pixel_std", [0.0, 1.0, 1.0]),
        ("pixel_std", [-1.0, 1.0, 1.0]),
        ("backbone", "stdc"),
        ("backbone.name", "resnet101"),
        ("backbone.name", None),
        ("backbone.stdc_layers", [1, 1]),
        ("backbone.stdc_layers", [0, 1, 1]),
        ("backbone.stdc_base", 0),
        ("backbone.stdc_block_num", 1),
        ("pixel_decoder.conv_dim", 0),
        ("pixel_decoder.mask_dim", -32),
        ("transformer_decoder.hidden_dim", 0),
        ("transformer_decoder.num_queries", 0),
        ("transformer_decoder.num_heads", 3),
        ("transformer_decoder.num_heads", 0),
        ("transformer_decoder.num_layers", 0),
        ("transformer_decoder.num_feature_levels", 4),
        ("transformer_decoder.dim_feedforward", 1.5),
        ("inference.object_mask_threshold", 1.5),
        ("inference.object_mask_threshold", -0.1),
        ("inference.overlap_threshold", math.nan),
        ("inference.overlap_threshold", math.inf),
        ("inference.overlap_threshold", "high"),
    ]
    for where, value in bad_values:
        yield pytest.param(("set", where, value), where.split(".")[-1], id=f"bad-{where}={value!r}")


def _mutate(data: dict[str, Any], op: str, where: str, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    *parents, last = where.split(".")
    node = data
    for p in parents:
        node = node[p]
    if op == "drop":
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(("mutation", "field"), list(_config_cases()))
def test_config_file_refused(tiny_checkpoint: Path, work: Path, mutation: tuple, field: str, request) -> None:
    """A config beside the weights with a missing/unknown/bad field: one line naming file and field."""
    config = _mutate(_TINY_DICT, *mutation)
    meta = {"format": "pem-deploy", "config": config}
    folder = work / "cfg" / str(abs(hash(request.node.name)))
    ck = copy_checkpoint(tiny_checkpoint, folder, meta=json.dumps(meta))
    line = assert_one_line_error(invoke(["info", "--checkpoint", ck]), str(ck.with_suffix(".json")), field)
    assert "Traceback" not in line


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param("", "not JSON", id="empty"),
        pytest.param('{"format": "pem-deploy", "config": {', "not JSON", id="truncated"),
        pytest.param("[1, 2]", "no 'config'", id="list"),
        pytest.param('{"format": "pem-deploy"}', "no 'config'", id="no-config"),
        pytest.param('{"config": 7}', "expected a JSON object", id="config-not-object"),
        pytest.param("\udcff\x00garbage", "not JSON", id="binary"),
        pytest.param("[" * 100_000 + "]" * 100_000, "not JSON", id="deep-nesting"),
    ],
)
def test_bad_config_json(tiny_checkpoint: Path, work: Path, text: str, needle: str, request) -> None:
    folder = work / "badjson" / request.node.callspec.id
    ck = copy_checkpoint(tiny_checkpoint, folder)
    ck.with_suffix(".json").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert_one_line_error(invoke(["info", "--checkpoint", ck]), str(ck.with_suffix(".json")), needle)


def test_missing_backbone_is_not_resnet50() -> None:
    """Regression: a config without a backbone used to become ResNet-50 silently."""
    data = dict(_TINY_DICT)
    del data["backbone"]
    with pytest.raises(ConfigError, match="backbone: missing field"):
        PEMConfig.from_dict(data, source="x.json")


_TRAIN_DICT = train_preset(TINY).to_dict()


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        pytest.param(("drop", "lr", None), "lr", id="missing-lr"),
        pytest.param(("drop", "augment.crop_size", None), "augment.crop_size", id="missing-crop"),
        pytest.param(("set", "surprise", 1), "surprise", id="unknown"),
        pytest.param(("set", "loss.surprise", 1), "loss.surprise", id="unknown-loss"),
        pytest.param(("set", "lr", 0.0), "lr", id="lr-zero"),
        pytest.param(("set", "lr", math.nan), "lr", id="lr-nan"),
        pytest.param(("set", "lr", -1e-3), "lr", id="lr-negative"),
        pytest.param(("set", "iterations", 0), "iterations", id="iterations-0"),
        pytest.param(("set", "batch_size", "8"), "batch_size", id="batch-str"),
        pytest.param(("set", "accumulate", 3), "accumulate", id="accumulate-indivisible"),
        pytest.param(("set", "warmup_iters", -1), "warmup_iters", id="warmup-negative"),
        pytest.param(("set", "log_period", 0), "log_period", id="log-period-0"),
        pytest.param(("set", "augment.crop_size", [16, 16]), "augment.crop_size", id="crop-small"),
        pytest.param(("set", "augment.scale_range", [2.0, 1.0]), "augment.scale_range", id="scale-reversed"),
        pytest.param(("set", "loss.num_points", 0), "loss.num_points", id="points-0"),
        pytest.param(("set", "loss.importance_sample_ratio", 1.5), "importance_sample_ratio", id="ratio"),
        pytest.param(("set", "loss.dice_weight", math.inf), "dice_weight", id="dice-inf"),
        pytest.param(("set", "amp", "yes"), "amp", id="amp-str"),
    ],
)
def test_train_config_refused(mutation: tuple, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(_mutate(_TRAIN_DICT, *mutation), source="state.json")
    message = str(info.value)
    assert "\n" not in message and message.startswith("state.json: ") and field in message


def test_configs_round_trip() -> None:
    assert TrainConfig.from_dict(_TRAIN_DICT) == train_preset(TINY)
    assert PEMConfig.from_dict(_TINY_DICT) == get_preset(TINY)
