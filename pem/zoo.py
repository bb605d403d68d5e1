"""The trained default models: generated and trained locally, deterministically, then cached.

No trained weights ship with the repository. :func:`ensure_default_checkpoint` generates the
synthetic Cityscapes-format set and trains the ``cityscapes-panoptic-tiny`` preset on it from a
fixed seed on the CPU, into ``$PEM_DEPLOY_CACHE`` (default ``~/.cache/pem-deploy``), and reuses
the result when present. Cache entries are keyed by a hash of everything that defines them
(model config, training recipe, dataset generator version and settings), so changing the
recipe retrains instead of silently reusing a stale model.

Variants:

- ``"default"``: the full tiny recipe on 300 + 50 images of 256x512 (mIoU 0.82, PQ 0.70 on the
  synthetic val split); about 2.5 minutes on a 2-core CPU (~20 s data, ~125 s training and
  evaluation);
- ``"quick"``: 80 steps on 32 images (~25 s; mIoU ~0.48) for unit tests that need a trained-ish
  model with sensible outputs but not its accuracy.

One panoptic model serves both the semantic and the panoptic tests: PEM's outputs give the
semantic map (class x mask product) as well as the panoptic segments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from contract.output import is_internal, staged_folder
from pem.config import get_preset
from pem.data.synthetic import GENERATOR_VERSION, SyntheticConfig, make_synthetic
from pem.train.config import TINY_RECIPE, TrainConfig

Variant = Literal["default", "quick"]
# 2: the matcher orders indistinguishable targets canonically (training changed where they tied).
_ZOO_FORMAT = 2


@dataclass(frozen=True)
class ZooRecipe:
    """How a cached model is made: preset, synthetic data and training recipe (all seeded)."""

    preset: str
    data: SyntheticConfig
    train: TrainConfig

    def key(self) -> str:
        """Short content hash of everything that defines the result."""
        payload = {
            "format": _ZOO_FORMAT,
            "model": get_preset(self.preset).to_dict(),
            "data": _data_payload(self.data),
            "train": self.train.to_dict(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _data_payload(data: SyntheticConfig) -> dict:
    return {"generator": GENERATOR_VERSION, **json.loads(json.dumps(dataclasses.asdict(data)))}


RECIPES: dict[str, ZooRecipe] = {
    "default": ZooRecipe(
        "cityscapes-panoptic-tiny", SyntheticConfig(train=300, val=50, size=(256, 512), seed=0), TINY_RECIPE
    ),
    "quick": ZooRecipe(
        "cityscapes-panoptic-tiny",
        SyntheticConfig(train=32, val=8, size=(256, 512), seed=0),
        TINY_RECIPE.replace(iterations=80, warmup_iters=10, checkpoint_period=0),
    ),
}


def cache_dir() -> Path:
    """``$PEM_DEPLOY_CACHE`` or ``~/.cache/pem-deploy``."""
    root = os.environ.get("PEM_DEPLOY_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "pem-deploy"


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Train with one intra-op thread: results independent of the core count, and no
    oversubscription slow-down on a busy CPU. Restores the previous setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX ``flock``; a no-op where unavailable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def synthetic_dataset(data: SyntheticConfig, progress: bool = False) -> Path:
    """Folder of the synthetic set ``data`` in the cache, generated on first use."""
    key = hashlib.sha256(json.dumps(_data_payload(data), sort_keys=True).encode()).hexdigest()[:16]
    name = f"{data.train}-{data.val}-{data.size[0]}x{data.size[1]}-s{data.seed}-{key}"
    target = cache_dir() / "synthetic" / name
    if (target / "gtFine").is_dir():
        return target
    with _lock(target.with_name(target.name + ".lock")):
        if not (target / "gtFine").is_dir():
            make_synthetic(target, data, progress=progress)
    return target


def default_dataset_path(variant: Variant = "default", progress: bool = False) -> Path:
    """The synthetic dataset (Cityscapes layout, ``train`` and ``val``) the variant is trained on."""
    return synthetic_dataset(_recipe(variant).data, progress)


def _recipe(variant: str) -> ZooRecipe:
    if variant not in RECIPES:
        raise ValueError(f"unknown default-model variant {variant!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[variant]


def ensure_default_checkpoint(variant: Variant = "default", progress: bool | None = False) -> Path:
    """Path of the cached trained model (``model.safetensors``, config beside it); trains if absent.

    Deterministic: the data, initialisation and training are seeded, and training runs on the
    CPU. Safe to call from several processes at once (one trains, the others wait).
    ``progress``: as :func:`pem.train.run_training` takes it (``None``: a bar on a terminal, a
    line every few seconds elsewhere; ``False``: quiet).
    """
    from pem.train.trainer import MODEL_FILE, run_training

    recipe = _recipe(variant)
    target = cache_dir() / "models" / f"{variant}-{recipe.key()}"
    weights = target / MODEL_FILE
    if weights.is_file():
        return weights
    data = synthetic_dataset(recipe.data, bool(progress))
    with _lock(target.with_name(target.name + ".lock")):
        if weights.is_file():
            return weights
        # The cache is pem-deploy's own: an incomplete folder left by an older version is
        # replaced (exist_ok / overwrite), through the one output mechanism (contract/output.py).
        with _single_thread(), staged_folder(target, exist_ok=True, overwrite=True) as out:
            run = out.scratch / "run"
            run_training(
                recipe.preset,
                data,
                run,
                recipe.train,
                device="cpu",
                progress=progress,
                extra_metadata={"zoo_variant": variant, "zoo_key": recipe.key()},
            )
            for file in sorted(run.iterdir()):
                if file.is_file() and not is_internal(file.name) and file.name != "last_state.safetensors":
                    out.adopt(file.name, file)
    return weights


def default_model_path(variant: Variant = "default", progress: bool = False) -> Path:
    """Alias of :func:`ensure_default_checkpoint`."""
    return ensure_default_checkpoint(variant, progress)


def default_model_metrics(variant: Variant = "default", progress: bool = False) -> dict:
    """The validation metrics recorded when the variant was trained (``mIoU``, ``PQ``, ...)."""
    weights = ensure_default_checkpoint(variant, progress)
    return json.loads(weights.with_suffix(".json").read_text()).get("metrics", {})
