"""Hostile checkpoints (pem.checkpoint): broken weights, a config that does not fit them, pickles,
NaN in an official checkpoint; one line each, and a good checkpoint accepted.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pem.checkpoint import CheckpointError, verify_checkpoint
from pem.config import get_preset
from pem.model import PEM
from tests.helpers.cli import assert_one_line_error, invoke
from tests.helpers.hostile_args import TINY, copy_checkpoint, fast_export

# ---------------------------------------------------------------------------------------------
# Checkpoints


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
    ck = copy_checkpoint(
        tiny_checkpoint, work / "ck" / kind, weights=_broken_weights(tiny_checkpoint.read_bytes(), kind)
    )
    assert_one_line_error(invoke(["info", "--checkpoint", ck]), str(ck), _CKPT_CASES[kind])
    with pytest.raises(CheckpointError):
        verify_checkpoint(ck)


@pytest.mark.parametrize("kind", ["nan", "inf", "wrong-shape"])
def test_broken_checkpoint_export_refused(tiny_checkpoint: Path, work: Path, kind: str) -> None:
    """Export refuses NaN/Inf (naming the tensor) and misfit weights before writing anything."""
    ck = copy_checkpoint(
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
    ck = copy_checkpoint(tiny_checkpoint, work / "ck" / "mismatch", meta=meta)
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
    assert_one_line_error(invoke(fast_export(work / "nan-out", "--checkpoint", str(path))), key, "NaN/Inf")
