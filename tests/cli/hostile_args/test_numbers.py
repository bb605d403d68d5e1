"""Every CLI number out of range, devices that are not there, outputs of the wrong kind, and sizes
too large for memory (refused in well under a second, before any work): one line each.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.cli import assert_one_line_error, invoke
from tests.helpers.hostile_args import TINY

# ---------------------------------------------------------------------------------------------
# Every CLI number out of range


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
# Sizes too large for memory: refused in well under a second, before any work


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
