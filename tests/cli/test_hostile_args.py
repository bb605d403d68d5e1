"""Hostile-input corpus for configs, checkpoints, CLI numbers and every writer (issue 11).

Every case is generated from a table and asserts its exact outcome through ``cli.app``: exit code
2, exactly one ``error: ...`` line naming the thing at fault, no traceback (``result.exception``
is ``SystemExit``), or correct acceptance. Then file-system faults (a full tmpfs, a read-only
mount; skipped with the reason where mounting is not allowed) and a kill -9 sweep of export,
calibrate and train in subprocesses: nothing partial may be left, and ``train --resume`` after
a kill must finish the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from typer.testing import CliRunner

from cli import app
from contract.fs import STAGING_PREFIX, staging_pid
from contract.output import MANIFEST_NAME
from export.metadata import ArtifactWriter
from pem.checkpoint import CheckpointError, save_checkpoint, verify_checkpoint
from pem.config import ConfigError, PEMConfig, get_preset
from pem.model import PEM
from pem.train.config import TrainConfig, train_preset

TINY = "cityscapes-semantic-tiny"
REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# Helpers


def invoke(args: list[str]) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Any, *needles: str) -> str:
    """Exit 2, one ``error:`` line containing every needle, no traceback."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def no_partial_files(folder: Path) -> list[Path]:
    """Temporary, staging or 0-byte files under ``folder`` (should be none)."""
    if not folder.exists():
        return []
    bad = []
    for path in folder.rglob("*"):
        name = path.name
        if (
            name.endswith(".tmp")
            or name.startswith(STAGING_PREFIX)
            or (path.is_file() and path.stat().st_size == 0)
        ):
            bad.append(path)
    return bad


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def tiny_checkpoint(work: Path) -> Path:
    """A seeded tiny semantic checkpoint (weights + config)."""
    config = get_preset(TINY)
    torch.manual_seed(0)
    return save_checkpoint(PEM(config).eval(), config, work / "good" / "tiny.safetensors")


def _copy_checkpoint(src: Path, dst_dir: Path, weights: bytes | None = None, meta: Any = None) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    dst.write_bytes(src.read_bytes() if weights is None else weights)
    cfg = src.with_suffix(".json").read_text() if meta is None else meta
    dst.with_suffix(".json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return dst


# ---------------------------------------------------------------------------------------------
# 1. Configs: every field missing, unknown, wrongly typed, out of range; bad JSON


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
    ck = _copy_checkpoint(tiny_checkpoint, folder, meta=json.dumps(meta))
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
    ck = _copy_checkpoint(tiny_checkpoint, folder)
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


# ---------------------------------------------------------------------------------------------
# 2. Checkpoints


def _broken_weights(good: bytes, kind: str) -> bytes:
    state = st_load(good)
    first = sorted(k for k, v in state.items() if v.is_floating_point() and v.ndim >= 2)[0]
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "zero-byte":
        return b""
    if kind == "garbage":
        return b"\x00\x01not safetensors" * 10
    if kind == "header-only":
        return good[:8]
    if kind == "empty-state":
        return st_save({})
    if kind == "wrong-shape":
        state[first] = torch.zeros(3, 3)
    elif kind == "missing-key":
        del state[first]
    elif kind == "extra-key":
        state["surprise.weight"] = torch.zeros(2)
    elif kind == "wrong-dtype-int":
        state[first] = state[first].to(torch.int32)
    elif kind == "wrong-dtype-bool":
        state[first] = state[first] > 0
    elif kind == "nan":
        state[first] = state[first].clone()
        state[first].view(-1)[0] = math.nan
    elif kind == "inf":
        state[first] = state[first].clone()
        state[first].view(-1)[-1] = -math.inf
    return st_save(state, metadata={"format": "pem-deploy"})


_CKPT_CASES = {
    "truncated": "not a readable safetensors file",
    "zero-byte": "file is empty",
    "garbage": "not a readable safetensors file",
    "header-only": "not a readable safetensors file",
    "empty-state": "weights do not fit the config",
    "wrong-shape": "shape mismatch",
    "missing-key": "missing ",
    "extra-key": "unexpected 1: surprise.weight",
    "wrong-dtype-int": "has dtype int32",
    "wrong-dtype-bool": "has dtype bool",
    "nan": "NaN/Inf",
    "inf": "NaN/Inf",
}


@pytest.mark.parametrize("kind", list(_CKPT_CASES))
def test_broken_checkpoint_info(tiny_checkpoint: Path, work: Path, kind: str) -> None:
    """``info --checkpoint`` opens the weights: every broken file is one line naming the file."""
    ck = _copy_checkpoint(
        tiny_checkpoint, work / "ck" / kind, weights=_broken_weights(tiny_checkpoint.read_bytes(), kind)
    )
    assert_one_line_error(invoke(["info", "--checkpoint", ck]), str(ck), _CKPT_CASES[kind])
    with pytest.raises(CheckpointError):
        verify_checkpoint(ck)


@pytest.mark.parametrize("kind", ["nan", "inf", "wrong-shape"])
def test_broken_checkpoint_export_refused(tiny_checkpoint: Path, work: Path, kind: str) -> None:
    """Export refuses NaN/Inf (naming the tensor) and misfit weights before writing anything."""
    ck = _copy_checkpoint(
        tiny_checkpoint, work / "ckx" / kind, weights=_broken_weights(tiny_checkpoint.read_bytes(), kind)
    )
    out = work / "ckx" / kind / "out"
    line = assert_one_line_error(
        invoke(["export", "--checkpoint", ck, "--out", out]), str(ck), _CKPT_CASES[kind]
    )
    if kind != "wrong-shape":
        assert "tensor " in line
    assert not out.exists()


def test_config_weights_mismatch(tiny_checkpoint: Path, work: Path) -> None:
    """A valid config that describes another architecture than the weights."""
    meta = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    meta["config"]["transformer_decoder"]["num_queries"] = 30
    ck = _copy_checkpoint(tiny_checkpoint, work / "ck" / "mismatch", meta=meta)
    assert_one_line_error(invoke(["info", "--checkpoint", ck]), str(ck), "shape mismatch", "query")


def test_good_checkpoint_accepted(tiny_checkpoint: Path) -> None:
    result = invoke(["info", "--checkpoint", tiny_checkpoint])
    assert result.exit_code == 0, result.output
    assert "tensors, all fit the config and are finite" in result.output


class _Exploit:
    def __reduce__(self):  # runs os.system on an unsafe load
        return (os.system, (f"touch {_Exploit.marker}",))

    marker = ""


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_pickle_exploit_refused(work: Path, suffix: str) -> None:
    marker = work / f"pwned{suffix}"
    _Exploit.marker = str(marker)
    evil = work / f"evil{suffix}"
    if suffix == ".pkl":
        evil.write_bytes(pickle.dumps({"model": {"w": _Exploit()}}))
    else:
        torch.save({"model": {"w": _Exploit()}}, evil)
    out = work / f"evil-out{suffix}"
    assert_one_line_error(invoke(["export", "--preset", TINY, "--checkpoint", evil, "--out", out]), str(evil))
    assert not marker.exists() and not out.exists()


def test_official_checkpoint_with_nan_refused(work: Path) -> None:
    config = get_preset(TINY)
    state = PEM(config).state_dict()
    # not a backbone key: STDC registers its stages under two names, and the alias would win
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1 and "backbone" not in k)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = math.nan
    path = work / "official-nan.pth"
    torch.save({"model": state}, path)
    assert_one_line_error(invoke(_fast_export(work / "nan-out", "--checkpoint", str(path))), key, "NaN/Inf")


# ---------------------------------------------------------------------------------------------
# 3. Every CLI number out of range


def _number_cases() -> Iterator[Any]:
    ck = "CK"  # replaced by the checkpoint path
    train = ["train", "--preset", TINY, "--data", "DATA", "--out", "OUT"]
    evaluate = ["eval", "--checkpoint", ck, "--data", "DATA"]
    export = ["export", "--preset", TINY, "--out", "OUT"]
    calibrate = ["calibrate", "--preset", TINY, "--out", "OUT"]
    bench = ["bench", "--preset", TINY]
    table = [
        (["info", "--preset", TINY], "--height", ["0", "-32", "33", "100"]),
        (["info", "--preset", TINY], "--width", ["31"]),
        (["infer", "A", "B", "--out", "OUT"], "--alpha", ["-0.1", "1.5", "nan", "inf"]),
        (["make-synthetic", "OUT"], "--train", ["-1"]),
        (["make-synthetic", "OUT"], "--val", ["-3"]),
        (["make-synthetic", "OUT"], "--seed", ["-1"]),
        (["make-synthetic", "OUT"], "--size", ["16x16", "0x512", "abc", "256x"]),
        (train, "--lr", ["0", "-0.1", "nan", "inf", "-inf"]),
        (train, "--iterations", ["0", "-5"]),
        (train, "--batch-size", ["0"]),
        (train, "--accumulate", ["0"]),
        (train, "--num-points", ["0"]),
        (train, "--seed", ["-1"]),
        (train, "--eval-period", ["-1"]),
        (train, "--checkpoint-period", ["-1"]),
        (train, "--workers", ["-2"]),
        (train, "--threads", ["0", "-1"]),
        (train, "--crop", ["16x16", "axb"]),
        (evaluate, "--limit", ["0", "-1"]),
        (evaluate, "--batch-size", ["0"]),
        (evaluate, "--short-side", ["31", "0", "-512"]),
        (export, "--height", ["0", "48", "-64"]),
        (export, "--width", ["100"]),
        (export, "--batch", ["0", "-1"]),
        (export, "--seed", ["-1"]),
        (export, "--calib-images", ["0"]),
        (calibrate, "--calib-images", ["0"]),
        (calibrate, "--calib-seed", ["-1"]),
        (calibrate, "--percentile", ["0", "101", "nan"]),
        (calibrate, "--max-drop", ["-1", "nan"]),
        (calibrate, "--eval-limit", ["0"]),
        (calibrate, "--height", ["50"]),
        (calibrate, "--threads", ["0"]),
        (["check", "A"], "--max-rel-error", ["-1", "nan"]),
        (["check", "A"], "--min-agreement", ["0", "1.5", "-0.5", "nan"]),
        (["check", "A"], "--noise", ["-1"]),
        (["check", "A"], "--scenes", ["-1"]),
        (bench, "--batch", ["0"]),
        (bench, "--iterations", ["0"]),
        (bench, "--warmup", ["-1"]),
        (bench, "--threads", ["0"]),
        (bench, "--shape", ["0x0", "axb"]),
        (["demo"], "--threads", ["0"]),
        (["demo"], "--iterations", ["0"]),
    ]
    for base, flag, values in table:
        for value in values:
            yield pytest.param(base, flag, value, id=f"{base[0]}{flag}={value}")


@pytest.mark.parametrize(("base", "flag", "value"), list(_number_cases()))
def test_number_out_of_range(
    tiny_checkpoint: Path, work: Path, base: list[str], flag: str, value: str
) -> None:
    subs = {"CK": str(tiny_checkpoint), "DATA": str(work / "no-data"), "OUT": str(work / "never")}
    args = [subs.get(a, a) for a in base] + [f"{flag}={value}"]
    assert_one_line_error(invoke(args), flag)
    assert not (work / "never").exists()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["train", "--preset", TINY, "--data", "DATA", "--device", "cuda"], id="train"),
        pytest.param(["eval", "--checkpoint", "CK", "--data", "DATA", "--device", "cuda"], id="eval"),
        pytest.param(["bench", "--preset", TINY, "--device", "cuda:0"], id="bench"),
        pytest.param(["bench", "--preset", TINY, "--device", "tpu"], id="unknown-device"),
    ],
)
def test_device_unavailable(tiny_checkpoint: Path, work: Path, args: list[str]) -> None:
    if torch.cuda.is_available() and "tpu" not in args:
        pytest.skip("CUDA is available here: --device cuda is valid")
    subs = {"CK": str(tiny_checkpoint), "DATA": str(work / "no-data")}
    assert_one_line_error(invoke([subs.get(a, a) for a in args]), "--device")


@pytest.fixture(scope="module")
def a_file(work: Path) -> Path:
    path = work / "a-file.txt"
    path.write_text("user data\n")
    return path


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        pytest.param(["export", "--preset", TINY, "--out", "FILE"], "--out", id="export"),
        pytest.param(["calibrate", "--preset", TINY, "--out", "FILE"], "--out", id="calibrate"),
        pytest.param(["train", "--preset", TINY, "--data", "DATA", "--out", "FILE"], "--out", id="train"),
        pytest.param(["bench", "--preset", TINY, "--out", "FILE"], "--out", id="bench"),
        pytest.param(["demo", "--out", "FILE"], "--out", id="demo"),
        pytest.param(["make-synthetic", "FILE"], "OUT", id="make-synthetic"),
        pytest.param(
            ["eval", "--checkpoint", "CK", "--data", "DATA", "--save-predictions", "FILE"],
            "--save-predictions",
            id="eval-save-predictions",
        ),
        pytest.param(
            ["eval", "--checkpoint", "CK", "--data", "DATA", "--json", "WORK"], "--json", id="eval-json-dir"
        ),
    ],
)
def test_out_names_wrong_kind(
    tiny_checkpoint: Path, work: Path, a_file: Path, args: list[str], flag: str
) -> None:
    subs = {"CK": str(tiny_checkpoint), "DATA": str(work / "no-data"), "FILE": str(a_file), "WORK": str(work)}
    assert_one_line_error(invoke([subs.get(a, a) for a in args]), flag)
    assert a_file.read_text() == "user data\n"


# ---------------------------------------------------------------------------------------------
# 4. Sizes too large for memory: refused in well under a second, before any work


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(
            ["export", "--preset", TINY, "--height", "32000", "--width", "32000", "--out", "OUT"], id="export"
        ),
        pytest.param(
            [
                "export",
                "--preset",
                TINY,
                "--height",
                "8192",
                "--width",
                "8192",
                "--batch",
                "1024",
                "--out",
                "OUT",
            ],
            id="export-batch",
        ),
        pytest.param(
            ["calibrate", "--preset", TINY, "--height", "32000", "--width", "32000", "--out", "OUT"],
            id="calibrate",
        ),
        pytest.param(["bench", "--preset", TINY, "--shape", "32000x32000"], id="bench-torch"),
        pytest.param(
            ["export", "--checkpoint", "CK", "--height", "32000", "--width", "32000", "--out", "OUT"],
            id="export-checkpoint",
        ),
        pytest.param(
            ["make-synthetic", "OUT", "--size", "60000x60000", "--train", "1", "--val", "0"],
            id="make-synthetic",
        ),
    ],
)
def test_too_large_for_memory(tiny_checkpoint: Path, work: Path, args: list[str]) -> None:
    out = work / "huge"
    subs = {"CK": str(tiny_checkpoint), "OUT": str(out)}
    start = time.perf_counter()
    result = invoke([subs.get(a, a) for a in args])
    elapsed = time.perf_counter() - start
    line = assert_one_line_error(result, "needs about", "GiB", "PEM_DEPLOY_IGNORE_MEMORY_CHECK")
    assert "x" in line and elapsed < 2.0, (elapsed, line)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 5. Writers: existing artifact, full disk, read-only folder


def _fast_export(out: Path, *extra: str) -> list[str]:
    return [
        "export", "--preset", TINY, "--height", "64", "--width", "64", "--simplifier", "none",
        "--exporter", "torchscript", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def exported(work: Path) -> Path:
    out = work / "artifact"
    result = invoke(_fast_export(out))
    assert result.exit_code == 0, result.output
    return out


def test_existing_artifact_refused_then_exist_ok(exported: Path) -> None:
    user = exported / "notes.txt"
    user.write_text("mine")
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    assert_one_line_error(invoke(_fast_export(exported)), "did not write (notes.txt)", "--exist-ok")
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before
    result = invoke(_fast_export(exported, "--exist-ok"))  # our own model.onnx / .json: replaced
    assert result.exit_code == 0, result.output
    assert user.read_text() == "mine" and sorted(p.name for p in exported.iterdir()) == [
        MANIFEST_NAME,
        "model.json",
        "model.onnx",
        "notes.txt",
    ]
    assert no_partial_files(exported) == []
    (exported / "model.onnx").write_bytes(b"the user's own model")  # no longer ours
    assert_one_line_error(
        invoke(_fast_export(exported, "--exist-ok")), "model.onnx: exists and was not written", "--overwrite"
    )
    assert (exported / "model.onnx").read_bytes() == b"the user's own model"
    result = invoke(_fast_export(exported, "--exist-ok", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert (exported / "model.onnx").read_bytes() != b"the user's own model"


def test_bench_artifact_too_large(exported: Path) -> None:
    start = time.perf_counter()
    result = invoke(["bench", exported / "model.onnx", "--shape", "40000x40000"])
    assert time.perf_counter() - start < 5
    assert_one_line_error(result, "bench at 40000x40000", "needs about")


@pytest.fixture(scope="module")
def dataset(work: Path) -> Path:
    result = invoke(["make-synthetic", work / "data", "--train", "4", "--val", "2", "--size", "64x128"])
    assert result.exit_code == 0, result.output
    return work / "data"


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str, needs_root: str) -> Iterator[Path]:
    """``folder`` as a tmpfs mounted with ``options``, unmounted on exit; skips the test where it
    cannot mount one (``needs_root``: the skip reason when not root)."""
    if os.geteuid() != 0:
        pytest.skip(needs_root)
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): full-disk test skipped"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, filled up."""
    with _tmpfs(tmp_path / "full", "size=64k", "mounting a tmpfs needs root") as folder:
        try:
            with open(folder / "filler", "wb") as f:
                for _ in range(64):
                    f.write(b"x" * 4096)
                    f.flush()
        except OSError:
            pass
        yield folder


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs (chmod does not stop root)."""
    why = "mounting a read-only tmpfs needs root (chmod does not stop root)"
    with _tmpfs(tmp_path / "ro", "ro,size=64k", why) as folder:
        yield folder


_WRITERS = {
    "export": [*_fast_export(Path("D") / "art")],
    "make-synthetic": ["make-synthetic", "D/syn", "--train", "2", "--val", "1", "--size", "64x128"],
    "eval-json": ["eval", "--checkpoint", "CK", "--data", "DATA", "--limit", "1", "--json", "D/m.json"],
    "eval-save-predictions": [
        *("eval", "--checkpoint", "CK", "--data", "DATA", "--limit", "1", "--save-predictions", "D/preds"),
    ],
    "bench-out": [
        *(
            "bench",
            "--preset",
            TINY,
            "--shape",
            "64x64",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--out",
            "D/b",
        ),
    ],
    "train": [
        *("train", "--preset", TINY, "--data", "DATA", "--out", "D/run", "--iterations", "1"),
        *("--batch-size", "2", "--crop", "64x64", "--num-points", "64", "--no-eval"),
    ],
}


@pytest.mark.parametrize("writer", list(_WRITERS))
@pytest.mark.parametrize("fault", ["full_disk", "read_only"])
def test_writer_faults(request, fault: str, writer: str, tiny_checkpoint: Path, dataset: Path) -> None:
    """Every writer on a full disk or a read-only folder: one line, nothing partial left."""
    folder = request.getfixturevalue(fault)
    before = sorted(p.name for p in folder.iterdir())
    subs = {"CK": str(tiny_checkpoint), "DATA": str(dataset)}
    args = [subs.get(str(a), str(a)).replace("D/", f"{folder}/", 1) for a in _WRITERS[writer]]
    result = invoke(args)
    reason = "No space left on device" if fault == "full_disk" else "Read-only file system"
    line = assert_one_line_error(result)
    assert reason in line or "could not write" in line, line
    assert sorted(p.name for p in folder.iterdir()) == before  # no output, no temp, no 0-byte file


# ---------------------------------------------------------------------------------------------
# 6. kill -9 sweep


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *[str(a) for a in args]],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL after ``seconds`` unless it ended; True when it was killed."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _staging(root: Path, with_file: bool) -> bool:
    """Whether a writer's staging folder (``.pem-deploy-staging-<pid>-*``) exists under ``root``
    (holding a file)."""
    for entry in root.glob(f"{STAGING_PREFIX}*"):
        live = staging_pid(entry.name) is not None and entry.is_dir()
        if live and (not with_file or any(p.is_file() for p in entry.rglob("*"))):
            return True
    return False


def _kill_when(proc: subprocess.Popen, root: Path, with_file: bool, timeout: float = 90.0) -> bool:
    """SIGKILL as soon as a staging folder shows up under ``root``; True when it was killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _staging(root, with_file):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)  # the staged files live only milliseconds before they move in
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return False


def _assert_nothing_partial(out: Path, complete: set[str]) -> None:
    parent = out.parent
    stale = [p for p in parent.iterdir() if p.name.startswith(STAGING_PREFIX)]
    if out.exists():
        names = {p.name for p in out.iterdir()}
        # An empty folder (made before the kill, nothing moved in yet) holds nothing partial, and
        # the next export into it is not refused; otherwise every file must be there.
        assert names in (set(), complete | {MANIFEST_NAME}), names
        assert no_partial_files(out) == []
    # staging of a killed run may remain beside the folder (hidden); the next run removes it
    assert all(p.is_dir() for p in stale)


@pytest.mark.parametrize("when", [0.5, 2.0, "staging-with-file"])
def test_kill_export(work: Path, when: float | str) -> None:
    """Killed at fixed times and while the files are staged (right before they move in)."""
    # The staging window is a few milliseconds: try a few runs until one is caught inside it.
    for attempt in range(5):
        root = work / f"kill-export-{when}-{attempt}"
        root.mkdir()
        out = root / "art"
        proc = _spawn(_fast_export(out), REPO)
        killed = (
            _kill_after(proc, when) if isinstance(when, float) else _kill_when(proc, root, with_file=True)
        )
        if isinstance(when, float) or (killed and _staging(root, True)):
            break
        _assert_nothing_partial(out, {"model.onnx", "model.json"})  # missed: the run completed
    if not isinstance(when, float):
        assert killed and _staging(root, True), "the export was not caught while staging (5 tries)"
    _assert_nothing_partial(out, {"model.onnx", "model.json"})
    if killed and not isinstance(when, float):
        # the next export into that folder removes the dead run's staging as it starts
        with ArtifactWriter(out, names=("model.onnx", "model.json")):
            pass
        assert not [p for p in root.iterdir() if staging_pid(p.name) is not None]


@pytest.mark.parametrize("when", [0.5, 5.0, "staging"])
def test_kill_calibrate(work: Path, when: float | str) -> None:
    """Killed at fixed times and once its staging folder exists (export + calibration under way)."""
    root = work / f"kill-calib-{when}"
    root.mkdir()
    out = root / "int8"
    args = [
        "calibrate",
        "--preset",
        TINY,
        "--height",
        "64",
        "--width",
        "64",
        "--calib-images",
        "4",
        "--no-report",
        "--out",
        out,
    ]
    proc = _spawn(args, REPO)
    killed = _kill_after(proc, when) if isinstance(when, float) else _kill_when(proc, root, with_file=False)
    assert killed, "calibrate finished before the kill"
    _assert_nothing_partial(out, {"model.onnx", "model.json", "model.cache"})


def test_kill_train_then_resume(work: Path, dataset: Path) -> None:
    out = work / "kill-train"
    args = [
        *(
            "train",
            "--preset",
            TINY,
            "--data",
            dataset,
            "--out",
            out,
            "--iterations",
            "6",
            "--batch-size",
            "2",
        ),
        *("--crop", "64x64", "--num-points", "64", "--checkpoint-period", "2", "--no-eval", "--threads", "1"),
    ]
    proc = _spawn(args, REPO)
    state = out / "last_state.safetensors"
    deadline = time.monotonic() + 60
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists(), "no training state was written before the kill"
    assert no_partial_files(out) == []
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "trained 6 steps" in result.output
    assert (out / "model.safetensors").is_file() and no_partial_files(out) == []
    verify_checkpoint(out / "model.safetensors")
