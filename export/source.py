"""Loading the PyTorch model to export: a preset (seeded random weights) or a checkpoint."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contract.resources import check_memory
from contract.sidecar import Sidecar
from contract.vocabulary import OFFICIAL_CHECKPOINT_SUFFIXES, OUR_CHECKPOINT_SUFFIXES
from export.errors import ExportError
from pem.checkpoint import (
    CheckpointError,
    check_finite,
    load_checkpoint,
    load_official_checkpoint,
    read_checkpoint_config,
)
from pem.config import ConfigError, PEMConfig, estimate_forward_bytes, get_preset
from pem.model import PEM


@dataclass
class ModelSource:
    """A model in eval mode, its config (input size included) and where it came from."""

    model: PEM
    config: PEMConfig
    description: dict[str, Any] = field(default_factory=dict)


def source_files(source: ModelSource) -> tuple[Path, ...]:
    """The files ``source`` was read from (checkpoint and config): never written by an export."""
    from pem.checkpoint import checkpoint_files

    checkpoint = source.description.get("checkpoint")
    return tuple(checkpoint_files(checkpoint)) if checkpoint else ()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _input_size(config: PEMConfig, height: int | None, width: int | None) -> tuple[int, int]:
    h = config.input_size[0] if height is None else height
    w = config.input_size[1] if width is None else width
    for flag, value in (("--height", h), ("--width", w)):
        if value <= 0 or value % 32:
            raise ExportError(f"{flag} {value}: must be a positive multiple of 32")
    return h, w


def _check_memory(config: PEMConfig, height: int | None, width: int | None, batch: int) -> None:
    h, w = _input_size(config, height, width)
    check_memory(
        f"the model {config.name} at {h}x{w}, batch {batch},", estimate_forward_bytes(config, h, w, batch)
    )


def load_source(
    *,
    preset: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    batch: int = 1,
) -> ModelSource:
    """Build the model to export.

    * ``checkpoint`` ending in ``.safetensors``: one of our checkpoints (config read beside it);
      ``preset`` must not be given.
    * ``checkpoint`` ending in ``.pkl``/``.pth``: an official detectron2 checkpoint, loaded strictly
      into the architecture of ``preset`` (required).
    * ``preset`` alone: the preset's architecture with random weights drawn from ``seed`` (for
      testing the toolchain; the global torch RNG is left untouched).

    ``height``/``width`` override the deployed input size (multiples of 32). Before any model is
    built, the memory a forward pass of ``batch`` frames at that size needs is estimated and a size
    that cannot fit is refused (:class:`contract.resources.ResourceError`).

    Raises:
        ExportError: one line naming the bad argument or file.
    """
    try:
        if checkpoint is None:
            if preset is None:
                raise ExportError("give --preset NAME or --checkpoint FILE")
            config = get_preset(preset)
            _check_memory(config, height, width, batch)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = PEM(config)
            description: dict[str, Any] = {
                "preset": preset,
                "checkpoint": None,
                "weights": "random",
                "seed": seed,
            }
        else:
            path = Path(checkpoint)
            model = _checkpoint_model(path, preset, (height, width, batch))
            config = model.config
            description = {
                "preset": preset,
                "checkpoint": str(path),
                "checkpoint_sha256": _file_sha256(path),
                "weights": "checkpoint",
                "seed": None,
            }
    except (ConfigError, CheckpointError) as exc:
        raise ExportError(str(exc)) from None
    config = config.replace(input_size=_input_size(config, height, width))
    model.config = config
    model.eval()
    description["name"] = config.name
    description["config"] = config.to_dict()
    return ModelSource(model=model, config=config, description=description)


def _checkpoint_model(path: Path, preset: str | None, size: tuple[int | None, int | None, int]) -> PEM:
    """The model in checkpoint ``path``: one of ours (config beside it) or an official one (the
    architecture of ``preset``), once a forward pass at ``size`` (H, W, batch) fits in memory."""
    height, width, batch = size
    if not path.is_file():
        raise ExportError(f"--checkpoint {path}: no such file")
    if path.suffix in OUR_CHECKPOINT_SUFFIXES:
        if preset is not None:
            raise ExportError(
                f"--preset {preset}: not used with {path.name} (its config is read beside it); drop it"
            )
        _check_memory(read_checkpoint_config(path), height, width, batch)
        return load_checkpoint(path)  # type: ignore[return-value]
    if path.suffix in OFFICIAL_CHECKPOINT_SUFFIXES:
        if preset is None:
            raise ExportError(
                f"--checkpoint {path}: an official checkpoint needs --preset NAME for its architecture"
            )
        config = get_preset(preset)
        _check_memory(config, height, width, batch)
        model = PEM(config)
        load_official_checkpoint(model, path, strict=True)
        check_finite(path, model.state_dict())  # NaN/Inf weights: never exported
        return model
    raise ExportError(
        f"--checkpoint {path}: unknown checkpoint type {path.suffix!r} "
        f"(expected {', '.join(OUR_CHECKPOINT_SUFFIXES + OFFICIAL_CHECKPOINT_SUFFIXES)})"
    )


def source_record(description: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``description`` as the sidecar in ``out_dir`` records it: a checkpoint path also relative to
    that folder (``checkpoint_relative``) and absolute (``checkpoint_absolute``), so ``check`` finds
    the checkpoint from any working folder and after the two are moved together."""
    record = dict(description)
    if record.get("checkpoint"):
        path = Path(record["checkpoint"]).resolve()
        record["checkpoint_absolute"] = str(path)
        record["checkpoint_relative"] = os.path.relpath(path, Path(out_dir).resolve())
    return record


def load_source_from_sidecar(
    sidecar: Sidecar, sidecar_path: str | os.PathLike[str] | None = None
) -> ModelSource:
    """Rebuild the PyTorch model an artifact was exported from (for parity checks).

    A recorded checkpoint is looked for relative to the sidecar's folder first, then at its
    absolute path, then as given to the export (:meth:`Provenance.checkpoint_candidates`).
    """
    src = sidecar.provenance.model_source
    size = sidecar.input.default_size or (None, None)
    if src.weights == "random":
        return load_source(preset=src.preset, height=size[0], width=size[1], seed=src.seed or 0)
    if src.checkpoint:
        where = Path(sidecar_path) if sidecar_path is not None else Path("sidecar")
        candidates = sidecar.provenance.checkpoint_candidates(where.parent)
        found = next((path for _, path in candidates if path.is_file()), None)
        if found is None:
            looked = "; ".join(f"{key} -> {path}" for key, path in candidates)
            raise ExportError(
                f"{where}: the checkpoint this artifact was exported from is missing ({looked}); "
                "pass --checkpoint FILE (or --preset NAME) to compare with another model"
            )
        source = load_source(preset=src.preset, checkpoint=found, height=size[0], width=size[1])
        recorded = src.checkpoint_sha256
        if recorded and source.description.get("checkpoint_sha256") != recorded:
            raise ExportError(
                f"{found} (recorded in {where}): file changed since the export (sha256 differs); "
                "pass --checkpoint FILE to compare with it anyway"
            )
        return source
    raise ExportError(
        "the sidecar does not say which model it was exported from; give --preset or --checkpoint"
    )
