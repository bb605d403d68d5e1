"""Checkpoints: our own (safetensors + JSON config) and the official detectron2 ones (.pkl / .pth).

Official files are pickles. They are read without executing arbitrary code: ``.pth`` through
``torch.load(weights_only=True)``, ``.pkl`` through an unpickler that only resolves an explicit
allow-list of numpy reconstruction helpers and builtin containers.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from contract.errors import PemDeployError, one_line
from contract.output import check_file, write_file
from pem.config import ConfigError, PEMConfig


class CheckpointError(PemDeployError, RuntimeError):
    """A checkpoint file is missing, unreadable, unsafe or does not fit the model."""


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a model."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int | None = None) -> str:
        """Multi-line report; ``limit`` caps how many names each line lists."""

        def names(items: list[str]) -> str:
            shown = items if limit is None else items[:limit]
            more = f" (+{len(items) - len(shown)} more)" if len(items) > len(shown) else ""
            return ", ".join(shown) + more

        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.ignored:
            lines.append(f"ignored (training-only) {len(self.ignored)}: {names(self.ignored)}")
        if self.missing:
            lines.append(f"missing {len(self.missing)}: {names(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected {len(self.unexpected)}: {names(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{key} (model {want}, checkpoint {got})" for key, want, got in self.mismatched]
            lines.append(f"shape mismatch {len(shapes)}: {names(shapes)}")
        return "\n".join(lines)

    def one_line(self) -> str:
        return self.summary(limit=5).replace("\n", "; ")


# ---------------------------------------------------------------------------------------------
# Safe reading of official pickles

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _read_pickle(path: Path) -> Any:
    with path.open("rb") as f:
        try:
            return _RestrictedUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"{path}: unsafe or unreadable pickle ({exc})") from None
        except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
            raise CheckpointError(f"{path}: not a valid pickle ({exc})") from None


def read_official_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read the ``model`` state dict of an official checkpoint (.pkl or .pth) as tensors.

    Raises :class:`CheckpointError` naming the file when it is missing, not a checkpoint or
    contains anything but tensors / arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    # Zip archives and legacy torch.save files go through torch's weights-only loader.
    if zipfile.is_zipfile(path) or path.suffix in (".pth", ".pt", ".tar"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for bad/unsafe files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{path}: cannot read as a weights-only torch checkpoint ({first})"
            ) from None
    else:
        obj = _read_pickle(path)
    return _tensor_state(obj, str(path))


def _tensor_state(obj: Any, path: str) -> dict[str, Tensor]:
    """The tensors of a (possibly wrapped) state dict; ``path`` names it in errors."""
    for container in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(container), Mapping):
            obj = obj[container]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict of tensors (optionally under 'model'), got {type(obj).__name__}"
        )
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.array(value, order="C", copy=True))  # keeps 0-d shapes
        elif isinstance(value, np.generic):
            value = torch.tensor(value.item())
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[str(key)] = value
    return state


# Renames from older official code (April 2024): PEM-CA's to_query/to_key.
_LEGACY_RENAMES = ((".to_query.", ".feature_proj."), (".to_key.", ".query_proj."))
# Present in training checkpoints, meaningless for inference.
_IGNORED_PREFIXES = ("criterion.", "pixel_mean", "pixel_std")


def map_official_keys(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Map official key names onto ours; returns (mapped state, ignored keys)."""
    mapped: dict[str, Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if key.startswith(_IGNORED_PREFIXES):
            ignored.append(key)
            continue
        for old, new in _LEGACY_RENAMES:
            if "transformer_cross_attention_layers" in key:
                key = key.replace(old, new)
        mapped[key] = value
    return mapped, ignored


def load_state_dict_report(
    model: nn.Module, state: Mapping[str, Tensor], ignored: list[str] | None = None
) -> LoadReport:
    """Copy matching tensors into ``model`` and report missing/unexpected/mismatched keys by name."""
    report = LoadReport(ignored=list(ignored or []))
    own = model.state_dict()
    compatible: dict[str, Tensor] = {}
    for key, value in state.items():
        if key not in own and key.endswith("num_batches_tracked"):
            report.ignored.append(key)  # a BN step counter where the model has FrozenBN
        elif key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(own[key].shape), tuple(value.shape)))
        else:
            compatible[key] = value.to(own[key].dtype)
            report.loaded.append(key)
    # BN step counters are absent from FrozenBN (ADE20K configs) checkpoints; they hold no weights.
    report.missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    model.load_state_dict(compatible, strict=False)
    return report


def load_official_checkpoint(
    model: nn.Module, source: str | os.PathLike[str] | Mapping[str, Any], strict: bool = True
) -> LoadReport:
    """Load an official PEM checkpoint into ``model``.

    ``source`` is the checkpoint file (.pkl / .pth) or its state dict already in memory (tensors
    or numpy arrays, optionally under ``model`` / ``state_dict``; e.g. from a model hub or a
    distributed broadcast). With ``strict`` a :class:`CheckpointError` lists every missing,
    unexpected or mismatched key.
    """
    if isinstance(source, Mapping):
        name = "state dict"
        raw = _tensor_state(source, name)
    else:
        name = str(source)
        raw = read_official_state_dict(source)
    state, ignored = map_official_keys(raw)
    report = load_state_dict_report(model, state, ignored)
    if strict and not report.ok:
        raise CheckpointError(f"{name}: checkpoint does not fit the model; {report.one_line()}")
    return report


# ---------------------------------------------------------------------------------------------
# Our own format: <name>.safetensors (weights) + <name>.json (config)


def _config_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def checkpoint_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files a checkpoint is read from (weights, and for ours the ``.json`` config beside
    them): inputs that no output of the same run may replace (contract/output.py)."""
    path = Path(path)
    return [path, _config_path(path)]


def _unique_state(model: nn.Module) -> dict[str, Tensor]:
    """State dict with aliased tensors (STDC registers its stages twice) stored once."""
    seen: dict[int, str] = {}
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        ptr = value.data_ptr() if value.numel() else id(value)
        if ptr in seen and value.numel():
            continue
        seen[ptr] = key
        state[key] = value.detach().contiguous().cpu()
    return state


def save_checkpoint(
    model: nn.Module,
    config: PEMConfig,
    path: str | os.PathLike[str],
    extra: dict[str, Any] | None = None,
    write: Callable[[Path, bytes], object] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` config atomically; returns the weights path.

    By default each file is written by :func:`contract.output.write_file`: an existing weights or
    config file is refused unless ``overwrite`` (both are checked before either is written).
    ``write(path, data)`` replaces that (a training run records its files in its run folder).
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    meta = {"format": "pem-deploy", "config": config.to_dict(), **(extra or {})}
    if write is None:
        for target in (path, _config_path(path)):
            check_file(target, overwrite=overwrite)

        def write(target: Path, data: bytes) -> object:
            return write_file(target, data, overwrite=overwrite)

    write(path, save(_unique_state(model), metadata={"format": "pem-deploy"}))
    write(_config_path(path), (json.dumps(meta, indent=2) + "\n").encode())
    return path


def read_checkpoint_config(path: str | os.PathLike[str]) -> PEMConfig:
    """Config of one of our checkpoints (from the ``.json`` beside the weights), strictly validated."""
    path = Path(path)
    cfg_path = _config_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: config file of checkpoint {path.name} is missing")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{cfg_path}: invalid checkpoint config (not JSON: {exc})") from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"{cfg_path}: invalid checkpoint config (no 'config' object)")
    try:
        return PEMConfig.from_dict(meta["config"], source=str(cfg_path))
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = path.read_bytes()
        if not data:
            raise CheckpointError(f"{path}: file is empty (0 bytes), not a safetensors checkpoint")
        return load(data)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({one_line(exc)})") from None


def _alias_groups(model: nn.Module) -> list[list[str]]:
    """State-dict keys that name the same tensor (STDC registers its stages twice), grouped."""
    groups: dict[int, list[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(value), []).append(key)
    return list(groups.values())


def _expand_aliases(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    expanded = dict(state)
    for keys in _alias_groups(model):
        present = [k for k in keys if k in state]
        if present:
            for k in keys:
                expanded.setdefault(k, state[present[0]])
    return expanded


def check_finite(path: str | os.PathLike[str], state: Mapping[str, Tensor]) -> None:
    """Raise :class:`CheckpointError` naming the first tensor holding NaN or Inf."""
    for key, value in state.items():
        if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{path}: tensor {key} holds {bad} NaN/Inf value(s) of {value.numel()}; "
                "the weights are broken (diverged training or a corrupt file)"
            )


def check_state_fits(path: str | os.PathLike[str], model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Check that ``state`` fits ``model`` exactly: keys, shapes, dtype kinds, finite values.

    Raises :class:`CheckpointError` naming the file and the first offending tensors.
    """
    own = model.state_dict()
    report = LoadReport()
    report.unexpected = [k for k in state if k not in own]
    report.missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    report.mismatched = [
        (k, tuple(own[k].shape), tuple(v.shape))
        for k, v in state.items()
        if k in own and tuple(own[k].shape) != tuple(v.shape)
    ]
    if not report.ok:
        raise CheckpointError(f"{path}: weights do not fit the config; {report.one_line()}")
    for key, value in state.items():
        if own[key].is_floating_point() != value.is_floating_point() or value.dtype == torch.bool:
            raise CheckpointError(
                f"{path}: tensor {key} has dtype {str(value.dtype).removeprefix('torch.')}, "
                f"the model needs {str(own[key].dtype).removeprefix('torch.')}"
            )
    check_finite(path, state)


def verify_checkpoint(path: str | os.PathLike[str]) -> tuple[PEMConfig, int]:
    """Open one of our checkpoints and check its weights fit its config (without building weights).

    Returns (config, number of stored tensors). Raises :class:`CheckpointError` for a missing,
    empty, truncated or unreadable file, missing/unexpected keys, wrong shapes or dtypes, NaN/Inf.
    """
    from pem.model import PEM

    path = Path(path)
    config = read_checkpoint_config(path)
    state = _read_safetensors(path)
    with torch.device("meta"):
        model = PEM(config)
    check_state_fits(path, model, _expand_aliases(model, state))
    return config, len(state)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model described by the checkpoint's config and load its weights (strict).

    Refuses (:class:`CheckpointError`) weights that do not fit the config exactly or hold NaN/Inf.
    """
    from pem.model import PEM

    path = Path(path)
    config = read_checkpoint_config(path)
    state = _read_safetensors(path)
    model = PEM(config)
    expanded = _expand_aliases(model, state)
    check_state_fits(path, model, expanded)
    load_state_dict_report(model, expanded)
    return model.to(map_location).eval()


def load_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Initialise ``model.backbone`` from an ImageNet checkpoint on disk.

    Accepted: a torchvision ResNet-50 state dict (``conv1.*``, ``layer1.*``), detectron2's
    ``R-50.pkl`` (``stem.*``, ``res2.*``), or STDC-Seg ImageNet weights (``features.*``), each as
    ``.pth`` or ``.pkl``, optionally wrapped in ``model`` / ``state_dict``. Raises
    :class:`CheckpointError` naming the file if nothing of it fits the backbone.
    """
    from pem.backbones import ResNet, STDCNet, load_stdc_pretrained, load_torchvision_resnet50

    state = read_official_state_dict(path)
    backbone = model.backbone
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    report = LoadReport()
    try:
        if isinstance(backbone, ResNet) and any(k.startswith("layer1.") for k in state):
            report.missing, report.unexpected = load_torchvision_resnet50(backbone, state)
        elif isinstance(backbone, STDCNet):
            report.missing, report.unexpected = load_stdc_pretrained(backbone, state)
        else:
            d2 = {k: v for k, v in state.items() if not k.startswith("fc")}
            sub = load_state_dict_report(backbone, d2)
            report.missing, report.unexpected, report.mismatched = sub.missing, sub.unexpected, sub.mismatched
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    own = [k for k in backbone.state_dict() if not k.endswith("num_batches_tracked")]
    report.loaded = [k for k in own if k not in report.missing]
    if len(report.loaded) < len(own) // 2:
        raise CheckpointError(
            f"{path}: not backbone weights for {type(backbone).__name__}; {report.one_line()}"
        )
    return report
