"""Shared validation of ``pem-deploy`` options: one place for every range and path rule.

Each factory returns a typer/click *callback* that checks one option's value as soon as it is
parsed and raises :class:`contract.errors.UsageError` with one line naming the flag, the value
and the allowed range (the CLI's error handler prints ``error: ...`` and exits 2). ``None`` (an
option left at its "use the default" value) always passes. Usage::

    threads: int = typer.Option(1, "--threads", callback=at_least("--threads", 1))

or, naming the flag once, ``threads: int = int_option(1, "--threads", "CPU threads.", 1)``.

The rules are plain functions too (:func:`check_int_range`, :meth:`Interval.check`,
:func:`check_device`, ...) so the Python API and the CLI can share them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from contract.errors import UsageError

T = TypeVar("T")
Callback = Callable[[Any], Any]


def check_int_range(
    flag: str,
    value: int,
    minimum: int | None = None,
    maximum: int | None = None,
    multiple_of: int | None = None,
) -> int:
    """``value`` if ``minimum <= value <= maximum`` (and a multiple of ``multiple_of``)."""
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            bound = f">= {minimum}"
        elif minimum is None:
            bound = f"<= {maximum}"
        else:
            bound = f"in [{minimum}, {maximum}]"
        raise UsageError(f"{flag} {value}: must be {bound}")
    if multiple_of is not None and value % multiple_of:
        raise UsageError(f"{flag} {value}: must be a positive multiple of {multiple_of}")
    return value


@dataclass(frozen=True)
class Interval:
    """Where a float option may lie: each end closed unless ``*_open``, ``None`` for no bound.

    One value for the whole rule, so the check, its callback and its error message agree.
    """

    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    max_open: bool = False

    def describe(self) -> str:
        """The interval as the error messages spell it: ``in (0, 1]``, ``>= 0``, ``a number``."""
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"in {'(' if self.min_open else '['}{low:g}, {high:g}{')' if self.max_open else ']'}"
        if low is not None:
            return f"{'>' if self.min_open else '>='} {low:g}"
        if high is not None:
            return f"{'<' if self.max_open else '<='} {high:g}"
        return "a number"

    def check(self, flag: str, value: float) -> float:
        """``value`` if finite and inside; else :class:`UsageError` naming ``flag`` and the interval."""
        low, high = self.minimum, self.maximum
        low_bad = low is not None and (value <= low if self.min_open else value < low)
        high_bad = high is not None and (value >= high if self.max_open else value > high)
        if not math.isfinite(value) or low_bad or high_bad:
            raise UsageError(f"{flag} {value}: must be finite and {self.describe()}")
        return value


# The intervals several options use, named for what they mean.
NON_NEGATIVE = Interval(0)
POSITIVE = Interval(0, min_open=True)
UNIT = Interval(0, 1)  # an opacity
SHARE = Interval(0, 1, min_open=True)  # a share of matching labels / segments: 0 is never a goal
PERCENT = Interval(0, 100)
POSITIVE_PERCENT = Interval(0, 100, min_open=True)


def parse_hw(flag: str, text: str, minimum: int = 32, multiple_of: int | None = None) -> tuple[int, int]:
    """``"HxW"`` as two ints, each ``>= minimum`` (and a multiple of ``multiple_of``)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"{flag} must be HxW (e.g. 256x512), got {text!r}")
    h, w = int(match.group(1)), int(match.group(2))
    for value in (h, w):
        if value < minimum or (multiple_of and value % multiple_of):
            rule = f">= {minimum}" + (f" and multiples of {multiple_of}" if multiple_of else "")
            raise UsageError(f"{flag} {text}: height and width must be {rule}")
    return h, w


def check_device(flag: str, device: str) -> str:
    """``device`` if PyTorch can use it here: ``cpu``, ``cuda[:N]`` with a GPU, ``mps`` on a Mac."""
    name = device.strip().lower()
    match = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", name)
    if not match:
        raise UsageError(f"{flag} {device!r}: unknown device (use cpu, cuda, cuda:N or mps)")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return device
    import torch

    if kind == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UsageError(f"{flag} {device}: MPS is not available on this machine; use --device cpu")
        return device
    if not torch.cuda.is_available():
        raise UsageError(
            f"{flag} {device}: CUDA is not available on this machine "
            f"(PyTorch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use --device cpu"
        )
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise UsageError(f"{flag} {device}: only {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return device


def check_folder_path(flag: str, path: str) -> str:
    """``path`` unless it names an existing file (a folder is needed there)."""
    if Path(path).exists() and not Path(path).is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    return path


def check_file_path(flag: str, path: str) -> str:
    """``path`` unless it names an existing folder, or its parent is an existing file."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a folder, give a file name")
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is not a folder")
    return path


# ---------------------------------------------------------------------------------------------
# typer callbacks


def _optional(check: Callable[[Any], T]) -> Callback:
    def callback(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list | tuple):
            return [check(v) for v in value]
        return check(value)

    return callback


def int_range(
    flag: str, minimum: int | None = None, maximum: int | None = None, multiple_of: int | None = None
) -> Callback:
    """Callback: an int option within ``[minimum, maximum]`` (optionally a multiple)."""
    return _optional(lambda v: check_int_range(flag, v, minimum, maximum, multiple_of))


def at_least(flag: str, minimum: int) -> Callback:
    """Callback: an int option ``>= minimum``."""
    return int_range(flag, minimum)


def float_range(flag: str, interval: Interval) -> Callback:
    """Callback: a finite float option within ``interval``."""
    return _optional(lambda v: interval.check(flag, v))


def multiple_of_32(flag: str) -> Callback:
    """Callback: an input height / width, a positive multiple of 32."""
    return int_range(flag, 32, 32768, multiple_of=32)


def hw_size(flag: str, minimum: int = 32, multiple_of: int | None = None) -> Callback:
    """Callback: an ``HxW`` option (string kept as given; parsed and checked here)."""

    def check(text: str) -> str:
        parse_hw(flag, text, minimum, multiple_of)
        return text

    return _optional(check)


def device(flag: str = "--device") -> Callback:
    """Callback: a PyTorch device available on this machine."""
    return _optional(lambda v: check_device(flag, v))


def folder(flag: str = "--out") -> Callback:
    """Callback: a folder path that is not an existing file."""
    return _optional(lambda v: check_folder_path(flag, v))


def file(flag: str) -> Callback:
    """Callback: a file path that is not an existing folder."""
    return _optional(lambda v: check_file_path(flag, v))


def choice(
    flag: str, allowed: Sequence[str], message: str = "{flag} {value!r}: choose one of {allowed}"
) -> Callback:
    """Callback: one of ``allowed``, checked when parsed. ``message`` is the error (placeholders
    ``{flag}``, ``{value}`` and ``{allowed}``, the choices comma-separated), so an option keeps the
    wording its API's own check uses."""

    def check(value: str) -> str:
        if value not in allowed:
            raise UsageError(message.format(flag=flag, value=value, allowed=", ".join(allowed)))
        return value

    return _optional(check)


def choice_option(
    default: Any, flag: str, help: str, allowed: Sequence[str], message: str | None = None
) -> Any:
    """``typer.Option`` for one of ``allowed`` (refused when parsed, in ``message``'s words)."""
    callback = choice(flag, allowed) if message is None else choice(flag, allowed, message)
    return typer.Option(default, flag, help=help, callback=callback)


# ---------------------------------------------------------------------------------------------
# Option factories: each names its flag once, for the option and for the check of its value.
# ``default`` comes first, as in ``typer.Option``; the shared types below pass SET_BY_COMMAND
# there, and each command sets its own default with ``=``.

SET_BY_COMMAND: Any = ...


def int_option(
    default: Any, flag: str, help: str, minimum: int | None = None, maximum: int | None = None
) -> Any:
    """``typer.Option`` for an int ``flag`` within ``[minimum, maximum]`` (either end open if None)."""
    return typer.Option(default, flag, help=help, callback=int_range(flag, minimum, maximum))


def bounded_int_option(flags: tuple[str, ...], help: str, minimum: int, maximum: int) -> Any:
    """``typer.Option`` for an int within ``[minimum, maximum]`` named by ``flags`` (the first is
    the name the errors use, the others aliases); the default is the command's own."""
    return typer.Option(SET_BY_COMMAND, *flags, help=help, callback=int_range(flags[0], minimum, maximum))


def float_option(default: Any, flag: str, help: str, interval: Interval) -> Any:
    """``typer.Option`` for a finite float ``flag`` within ``interval``."""
    return typer.Option(default, flag, help=help, callback=float_range(flag, interval))


def folder_option(default: Any, flag: str, help: str) -> Any:
    """``typer.Option`` for a folder path (refused when it names an existing file)."""
    return typer.Option(default, flag, help=help, callback=folder(flag))


def exist_ok_option(help: str, default: Any = False) -> Any:
    """``typer.Option`` ``--exist-ok``: off unless given; the command's help says what it replaces.
    (An option group's field passes ``SET_BY_COMMAND`` and sets False after ``=``.)"""
    return typer.Option(default, "--exist-ok", help=help)


def overwrite_option(help: str, default: Any = False) -> Any:
    """``typer.Option`` ``--overwrite``: replace an existing file pem-deploy did not write (the one
    flag name for it in every command; contract/output.py); the command's help says which."""
    return typer.Option(default, "--overwrite", help=help)


@dataclass(frozen=True)
class OutputFlags:
    """A command's ``--out``, ``--exist-ok`` and ``--overwrite``: the three flags defined once (names,
    checks), in the command's own words for where its files go, what is added beside other files
    and what is replaced. Use as ``out: str = OUTPUT.out()``, ``exist_ok: bool = OUTPUT.exist_ok()``."""

    where: str  # --out's help
    added: str  # --exist-ok's help
    replaced: str  # --overwrite's help

    def out(self, default: Any = ...) -> Any:
        return folder_option(default, "--out", self.where)

    def exist_ok(self) -> Any:
        return exist_ok_option(self.added)

    def overwrite(self) -> Any:
        return overwrite_option(self.replaced)

    def group(self, name: str, out_default: Any = dataclasses.MISSING) -> type:
        """These three flags as a frozen option group ``name`` (commands/groups.py) with fields
        ``out`` (required unless ``out_default``), ``exist_ok`` and ``overwrite``."""
        fields = [
            ("out", Annotated[str, self.out(SET_BY_COMMAND)], dataclasses.field(default=out_default)),
            ("exist_ok", Annotated[bool, exist_ok_option(self.added, SET_BY_COMMAND)], False),
            ("overwrite", Annotated[bool, overwrite_option(self.replaced, SET_BY_COMMAND)], False),
        ]
        return dataclasses.make_dataclass(name, fields, frozen=True)


def device_option(default: Any, help: str) -> Any:
    """``typer.Option`` ``--device``: a PyTorch device available on this machine."""
    return typer.Option(default, "--device", help=help, callback=device())


def hw_option(default: Any, flag: str, help: str) -> Any:
    """``typer.Option`` for an ``HxW`` size (kept as the string given, checked when parsed)."""
    return typer.Option(default, flag, help=help, callback=hw_size(flag))


# ---------------------------------------------------------------------------------------------
# Options several commands take: one definition each, so name, meaning and checks agree.
# Use as ``threads: opt.Threads = 1`` (the default stays the command's own).

# Two defaults on purpose (README, "One vocabulary"): commands that measure or compare (bench,
# check, eval, calibrate, demo) default to 1 thread, steady numbers on a shared CPU; infer and
# train default to every core, the fastest on a machine of their own.
Threads = Annotated[
    int, int_option(SET_BY_COMMAND, "--threads", "CPU threads for PyTorch and onnxruntime (>= 1).", 1)
]
ThreadsAllCores = Annotated[
    int,
    int_option(
        SET_BY_COMMAND, "--threads", "CPU threads for PyTorch and onnxruntime (>= 1; default: every core).", 1
    ),
]
InputSize = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--imgsz",
        "--input-size",
        help="HxW the model runs at, for a --dynamic export (default: its default size; "
        "multiples of 32 within the exported range).",
        callback=hw_size("--imgsz"),
    ),
]
# One name per idea across commands; the older names stay as aliases for scripts.
CompareImages = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--images",
        "--image",
        help="Image files or folders to compare on (repeatable; --image is an alias).",
    ),
]
CompareNoise = Annotated[
    int,
    bounded_int_option(
        ("--noise", "--random"),
        "Extra random-noise images: a diagnostic, never decides the verdict.",
        0,
        1000,
    ),
]
CompareScenes = Annotated[
    int, bounded_int_option(("--scenes",), "Generated street scenes (they decide the verdict).", 0, 1000)
]
MaxRelError = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        "--max-rel-error",
        help="Max relative error of float outputs, mean |diff| / mean |ref| (default: the "
        "precision's policy).",
        callback=float_range("--max-rel-error", NON_NEGATIVE),
    ),
]

# check and verify: the parity policy's thresholds (runtime.tools.compare.PolicyOverrides); None: the
# policy's own.
MinAgreement = Annotated[
    Optional[float],  # noqa: UP045
    float_option(
        SET_BY_COMMAND,
        "--min-agreement",
        "Minimum label agreement on confident pixels (default: the precision's policy).",
        SHARE,
    ),
]
MinMiou = Annotated[
    Optional[float],  # noqa: UP045
    float_option(SET_BY_COMMAND, "--min-miou", "Minimum mIoU between the predictions.", SHARE),
]


def split_option(default: str, alias: str, help: str) -> Any:
    """``--split`` (the dataset split a command evaluates), with the command's older name."""
    return typer.Option(default, "--split", alias, help=f"{help} ({alias} is an alias).")


Providers = Annotated[
    Optional[list[str]],  # noqa: UP045  (typer reads the annotation at run time on Python 3.10)
    typer.Option(
        "--providers",
        "--provider",
        help="onnxruntime execution providers in priority order, comma-separated or repeated "
        "(default: the best available).",
    ),
]
CalibMethod = Annotated[
    str,
    typer.Option(
        "--calib-method",
        "--method",
        help="int8 calibration ranges: percentile | minmax | entropy.",
        callback=choice("--calib-method", ("percentile", "minmax", "entropy")),
    ),
]
CalibImages = Annotated[
    int,
    bounded_int_option(
        ("--calib-images", "--num-images"),
        "int8: number of calibration images (a deterministic sample).",
        1,
        100_000,
    ),
]


def provider_list(values: list[str] | None) -> list[str] | None:
    """``--providers a,b --providers c`` -> ``["a", "b", "c"]`` (None: let the runtime choose)."""
    names = [name.strip() for value in values or () for name in value.split(",") if name.strip()]
    return names or None


def _input_side(flag: str, side: str) -> Any:
    """``--height`` / ``--width``: the same rule and help for either side of the input."""
    return typer.Option(
        SET_BY_COMMAND,
        flag,
        help=f"Input {side}, a multiple of 32 (default: the model's).",
        callback=multiple_of_32(flag),
    )


Height = Annotated[Optional[int], _input_side("--height", "height")]  # noqa: UP045
Width = Annotated[Optional[int], _input_side("--width", "width")]  # noqa: UP045
Preset = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--preset", help="Preset name (see `info --list`); alone: seeded random weights."),
]
Checkpoint = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--checkpoint",
        help="Our .safetensors checkpoint (config beside it), or an official .pkl/.pth (with --preset).",
    ),
]
WeightSeed = Annotated[
    int, int_option(SET_BY_COMMAND, "--seed", "Seed of the random weights (preset without checkpoint).", 0)
]
Head = Annotated[str, typer.Option("--head", help="raw | semantic | panoptic (default: the model's task).")]
ArtifactName = Annotated[str, typer.Option("--name", help="File stem of the artifact.")]
Dataset = Annotated[str, typer.Option("--data", help="Dataset folder (Cityscapes layout or ADE20K).")]
Alpha = Annotated[float, float_option(SET_BY_COMMAND, "--alpha", "Overlay opacity.", UNIT)]
CudaGraph = Annotated[
    bool,
    typer.Option("--cuda-graph", help="Replay inference as a CUDA graph (TensorRT engines / GPU providers)."),
]


# ---------------------------------------------------------------------------------------------
# Option groups several commands share (commands/groups.py): one declaration of each flag.


@dataclass(frozen=True)
class ModelFlags:
    """The model a command reads: a preset or a checkpoint, at an input size (info)."""

    preset: Preset = None
    checkpoint: Checkpoint = None
    height: Height = None
    width: Width = None


@dataclass(frozen=True)
class SourceFlags(ModelFlags):
    """The PyTorch model a command exports or calibrates (``export.source.load_source``'s keywords):
    :class:`ModelFlags` and the seed of random weights."""

    seed: WeightSeed = 0


@dataclass(frozen=True)
class CalibFlags:
    """How INT8 calibration samples images and sets ranges (export and calibrate)."""

    calib_method: CalibMethod = "percentile"
    calib_images: CalibImages = 200


@dataclass(frozen=True)
class ComparisonFlags:
    """The generated inputs and the policy thresholds of a parity check (check and verify); the
    thresholds left None are the policy's own."""

    noise: CompareNoise = 0
    scenes: CompareScenes = 4
    max_rel: MaxRelError = None
    min_agreement: MinAgreement = None
    min_miou: MinMiou = None

    def policy(self, artifact: str, precision: str | None = None, min_segments: float | None = None) -> Any:
        """The parity policy these thresholds (and ``--policy`` / ``--min-segment-match``) ask for,
        or None for ``artifact``'s own (runtime.tools.compare.policy_from_overrides)."""
        from runtime.core.artifact import load_artifact
        from runtime.tools.compare import PolicyOverrides, policy_from_overrides

        overrides = PolicyOverrides(precision, self.max_rel, self.min_agreement, self.min_miou, min_segments)
        return policy_from_overrides(overrides, lambda: load_artifact(artifact).precision)
