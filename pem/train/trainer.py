"""The training loop: data stream -> model -> criterion -> AdamW, with checkpoints and logs.

Output directory:

- ``model.safetensors`` + ``model.json``: the trained model (loadable with
  :func:`pem.checkpoint.load_checkpoint`; the json also holds the training config, step and
  final metrics), written at every checkpoint period and at the end;
- ``last_state.safetensors``: everything needed to resume (model, optimizer, AMP scaler, step;
  configs in its metadata), one atomic file;
- ``metrics.jsonl``: one JSON object per logged step (losses, lr, timings) and per evaluation.

The run is deterministic given the seed: model initialisation, batch order, augmentation and
point sampling are seeded per sample (see :mod:`pem.train.loader`), so a resumed run continues
exactly like an uninterrupted one.

Distributed (``torchrun``, see :mod:`pem.train.distributed`): the model is wrapped in
DistributedDataParallel; each rank takes its slice of every global micro-batch (the samples,
augmentations and point samples of the single-process run), the loss divisors are summed over
ranks and DDP averages the gradients, so one step is the single-process step on the global batch
(exactly so with ``sync_bn="all"``; with the official SyncBN choice the layers left unsynchronised
see per-rank statistics, as in the official code). Accumulation micro-steps skip DDP's gradient
all-reduce (``no_sync``). Rank 0 alone writes checkpoints, the state and ``metrics.jsonl`` and
shows the progress bar. A run can be resumed with another number of ranks when the global
micro-batch still splits evenly (same global batch: same samples and optimizer state).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contract.errors import OutputError, PemDeployError
from contract.output import check_folder, write_into
from contract.progress import StatusLine
from contract.resources import check_memory
from pem.checkpoint import CheckpointError, save_checkpoint
from pem.config import ConfigError, PEMConfig, estimate_forward_bytes, get_preset
from pem.data.common import DatasetMeta, SegmentationDataset
from pem.distributed import (
    all_reduce_sum,
    broadcast_object,
    convert_sync_batch_norm,
    init_distributed,
    rank_device,
)
from pem.evaluation import EvalResult, evaluate
from pem.model import PEM
from pem.train.config import TrainConfig, train_preset
from pem.train.criterion import SetCriterion
from pem.train.loader import TrainStream, micro_batches
from pem.train.optim import build_optimizer, learning_rate, set_learning_rate

STATE_FILE = "last_state.safetensors"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"

# Fields that may differ when resuming (bookkeeping only; the recipe itself must match).
_RESUMABLE_CHANGES = {"eval_period", "checkpoint_period", "log_period", "num_workers"}


class NonFiniteLossError(PemDeployError, FloatingPointError):
    """The loss became NaN or infinite (the run diverged); the message names the step and the
    learning rate and suggests a lower ``--lr``."""


#: Training memory per forward pass: the activations kept for the backward pass, their
#: gradients and the temporaries of both, against :func:`pem.config.estimate_forward_bytes`
#: (one inference forward pass, itself about 2x an export's measured peak): 3x.
TRAIN_MEMORY_FACTOR = 3


def check_training_memory(
    model_config: PEMConfig, config: TrainConfig, images_per_forward: int, device: torch.device
) -> None:
    """Refuse, before any work, a ``--batch-size`` x ``--crop`` that cannot fit the memory of
    ``device`` (host RAM, or the GPU's free memory), as export and bench do; ``ResourceError``
    (one line) names the size, the estimate and the override variable."""
    h, w = config.augment.crop_size
    # The estimate counts 3 copies of the weights too (weights, gradients, AdamW's moments).
    needed = TRAIN_MEMORY_FACTOR * estimate_forward_bytes(model_config, h, w, images_per_forward)
    available = None
    if device.type == "cuda":
        available = int(torch.cuda.mem_get_info(device)[0])
    check_memory(
        f"training {model_config.name} on {images_per_forward} crops of {h}x{w} per forward pass "
        f"(--batch-size {config.batch_size}, --accumulate {config.accumulate}) on {device.type}",
        needed,
        available,
    )


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.train`."""

    checkpoint: Path
    steps: int
    seconds: float
    final_loss: float
    metrics: EvalResult | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def sample_generator(seed: int, counter: int, device: torch.device) -> torch.Generator:
    """The random generator of the criterion's point sampling for training sample ``counter``."""
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 1_000_003 + counter * 7919 + 17) % (2**63 - 1))
    return gen


class Trainer:
    """Trains a PEM model on a dataset with a :class:`TrainConfig`.

    Args:
        model_config: the model to build (its ``num_classes`` must match the dataset).
        config: the recipe.
        train_set: training dataset (task ``semantic`` or ``panoptic``: the targets it yields).
        out_dir: output directory (see the module doc).
        val_set: optional dataset evaluated every ``eval_period`` steps and at the end.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        progress: progress bar with loss and ETA; ``None`` = the bar on a TTY, else a line every few
            seconds (:class:`contract.progress.StatusLine`); ``False`` = quiet.
        resume: continue from ``out_dir/last_state.safetensors``; without it an existing state
            is an error (nothing is overwritten by accident).
        exist_ok: a new run may start in a folder holding other files (never replaced).
        inputs: files and folders the run reads (the dataset): never written.

    Every file is written through :mod:`contract.output` (staged, renamed, recorded as ours);
    a new run into a folder holding files pem-deploy did not write is refused unless
    ``exist_ok``, and on ``resume`` the run's own files are replaced.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank builds a Trainer with the same arguments;
    it joins the process group (NCCL on CUDA, gloo on CPU) and uses ``cuda:LOCAL_RANK``.
    """

    def __init__(
        self,
        model_config: PEMConfig,
        config: TrainConfig,
        train_set: SegmentationDataset,
        out_dir: str | os.PathLike[str],
        val_set: SegmentationDataset | None = None,
        device: str | torch.device | None = None,
        progress: bool | None = None,
        resume: bool = False,
        extra_metadata: dict[str, Any] | None = None,
        exist_ok: bool = False,
        inputs: tuple[str | os.PathLike[str], ...] = (),
    ):
        if model_config.num_classes != train_set.meta.num_classes:
            raise ConfigError(
                f"model {model_config.name} has {model_config.num_classes} classes, "
                f"the dataset {train_set.meta.num_classes}"
            )
        self.model_config = model_config
        self.config = config
        self.train_set = train_set
        self.val_set = val_set
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.inputs = tuple(inputs)
        self.dist = init_distributed(device)
        self.device = rank_device(device, self.dist)
        self.world_size = self.dist.world_size
        self.rank_batch = config.rank_batch(self.world_size)
        check_training_memory(model_config, config, self.rank_batch, self.device)
        self.progress = progress
        self.extra_metadata = dict(extra_metadata or {})
        self.use_amp = config.amp if config.amp is not None else self.device.type == "cuda"
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16

        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
            torch.manual_seed(config.seed)
            self.model = PEM(model_config).to(self.device).train()
        self.sync_bn_modules: list[str] = []
        if self.world_size > 1:
            self.sync_bn_modules = convert_sync_batch_norm(self.model, config.sync_bn, self.device)
        self.criterion = SetCriterion(model_config.num_classes, config.loss).to(self.device)
        self.optimizer = build_optimizer(
            self.model, config.lr, config.backbone_multiplier, config.weight_decay
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.device.type == "cuda")
        self.stream = TrainStream(train_set, train_set.task, config.augment, config.seed)
        self.step = 0
        self.resumed_from_world_size: int | None = None
        state = self.out_dir / STATE_FILE
        # Rank 0 reads the output folder (other nodes may not share it) and every rank gets the
        # same answer, so all ranks fail together or continue together.
        status = self._output_status(state, exist_ok) if self.dist.is_main else ("ok", None)
        status = broadcast_object(status)
        if status[0] == "error":
            raise CheckpointError(status[1])
        if status[0] == "state":
            self._apply_state(state, *status[1])
        self.ddp: torch.nn.Module = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Wrapping broadcasts rank 0's weights and buffers: every rank starts identical.
            self.ddp = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )

    # -----------------------------------------------------------------------------------------
    # State

    def _output_status(self, state: Path, exist_ok: bool) -> tuple[str, Any]:
        """Rank 0's look at the output folder: ``("state", ...)`` to resume from, ``("error",
        message)``, or ``("ok", None)`` for a new run."""
        if self.resume and not state.is_file():
            return ("error", f"{state}: no training state to resume from")
        if self.resume:
            try:
                return ("state", self._read_state(state))
            except CheckpointError as exc:
                return ("error", str(exc))
        if state.exists():
            return (
                "error",
                f"{state}: a run already exists in {self.out_dir}; resume it or pick a new output",
            )
        ours = (MODEL_FILE, Path(MODEL_FILE).with_suffix(".json").name, METRICS_FILE)
        found = [n for n in ours if (self.out_dir / n).exists()]
        if found:
            return (
                "error",
                f"{self.out_dir}: already holds {', '.join(found)} (an earlier run without a "
                "resumable state); pick a new --out or delete those files",
            )
        try:
            check_folder(self.out_dir, exist_ok=exist_ok, inputs=self.inputs)
        except OutputError as exc:
            return ("error", str(exc))
        return ("ok", None)

    def _save_state(self) -> None:
        from safetensors.torch import save

        tensors: dict[str, torch.Tensor] = {}
        for key, value in self.model.state_dict().items():
            tensors[f"model.{key}"] = value.detach().cpu().clone()
        optim = self.optimizer.state_dict()
        for index, slots in optim["state"].items():
            for name, value in slots.items():
                tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().clone()
        groups = [{k: v for k, v in g.items()} for g in optim["param_groups"]]
        meta = {
            "format": "pem-deploy-train-state",
            "step": str(self.step),
            "model_config": json.dumps(self.model_config.to_dict()),
            "train_config": json.dumps(self.config.to_dict()),
            "param_groups": json.dumps(groups),
            "scaler": json.dumps(self.scaler.state_dict() if self.scaler.is_enabled() else {}),
            "world_size": str(self.world_size),
        }
        self._write(self.out_dir / STATE_FILE, save(tensors, metadata=meta))

    @staticmethod
    def _read_state(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: not a readable training state ({exc})") from None
        return meta, tensors

    def _load_state(self, path: Path) -> None:
        self._apply_state(path, *self._read_state(path))

    def _apply_state(self, path: Path, meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> None:
        if meta.get("format") != "pem-deploy-train-state":
            raise CheckpointError(f"{path}: not a pem-deploy training state")
        try:
            saved_model = PEMConfig.from_dict(json.loads(meta["model_config"]))
            saved_train = TrainConfig.from_dict(json.loads(meta["train_config"]))
            groups = json.loads(meta["param_groups"])
            step = int(meta["step"])
        except (KeyError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"{path}: malformed training state ({exc})") from None
        if saved_model != self.model_config:
            raise CheckpointError(f"{path}: was trained with a different model config")
        diff = [
            k
            for k, v in saved_train.to_dict().items()
            if v != self.config.to_dict()[k] and k not in _RESUMABLE_CHANGES
        ]
        if diff:
            raise CheckpointError(f"{path}: was trained with a different recipe ({', '.join(diff)})")
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(model_state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: model weights do not fit ({str(exc).splitlines()[0]})") from None
        optim_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                optim_state.setdefault(int(index), {})[name] = (
                    value.to(self.device) if name != "step" else value
                )
        self.optimizer.load_state_dict({"state": optim_state, "param_groups": groups})
        scaler = json.loads(meta.get("scaler", "{}"))
        if scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(scaler)
        self.step = step
        # Older states have no world size: they come from single-process runs.
        self.resumed_from_world_size = int(meta.get("world_size", "1"))

    def _save_model(
        self, metrics: EvalResult | None, final_loss: float, seconds: float | None = None
    ) -> Path:
        extra = {
            "train": self.config.to_dict(),
            "step": self.step,
            "final_loss": final_loss,
            "world_size": self.world_size,
            "per_rank_batch": self.rank_batch,
            **self.extra_metadata,
        }
        if seconds is not None:
            extra["seconds"] = round(seconds, 1)
        if metrics is not None:
            extra["metrics"] = metrics.to_dict()
        model = self.model
        return save_checkpoint(
            model, self.model_config, self.out_dir / MODEL_FILE, extra=extra, write=self._write
        )

    def _write(self, path: Path, data: bytes) -> None:
        """Write one file of the run folder (staged, renamed, recorded as ours; contract/output.py).

        On ``resume`` the run's own files are replaced even when an earlier version of pem-deploy
        wrote them without a record."""
        write_into(self.out_dir, path.name, data, overwrite=self.resume, inputs=self.inputs)

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        path = self.out_dir / METRICS_FILE
        before = path.read_bytes() if path.is_file() else b""
        # Rewritten whole through a rename (the file is small): a full disk never leaves half a line.
        self._write(path, before + (json.dumps(record) + "\n").encode())

    # -----------------------------------------------------------------------------------------
    # Loop

    def evaluate(self, progress: bool | None = False) -> EvalResult | None:
        """Evaluate on the validation set (``None`` without one)."""
        if self.val_set is None:
            return None
        return evaluate(
            self.model,
            self.val_set,
            short_side=self.config.test_short_side,
            max_size=self.config.test_max_size,
            progress=progress if self.dist.is_main else False,
        )

    def train_step(self) -> dict[str, float]:
        """One optimizer step (``accumulate`` micro-batches); returns the logged scalars.

        The step's global batch is samples ``step * batch_size ...``; micro-batch ``j`` is the
        next ``micro_batch`` of them and rank ``r`` takes its ``r``-th slice of each.
        """
        cfg = self.config
        lr = learning_rate(self.step, cfg.iterations, cfg.lr, cfg.lr_end, cfg.warmup_iters)
        set_learning_rate(self.optimizer, lr)
        world = self.world_size
        first = self.step * cfg.batch_size + self.dist.rank * self.rank_batch
        num_queries = self.model_config.transformer_decoder.num_queries
        sums = torch.zeros(4, dtype=torch.float64)
        t0 = time.perf_counter()
        data_time = 0.0
        batches = micro_batches(
            self.stream,
            first,
            self.rank_batch,
            cfg.accumulate,
            self.model_config.pixel_mean,
            cfg.num_workers,
            stride=cfg.micro_batch,
        )
        for j in range(cfg.accumulate):
            td = time.perf_counter()
            batch = next(batches)
            data_time += time.perf_counter() - td
            start = first + j * cfg.micro_batch
            generators = [
                sample_generator(cfg.seed, start + i, self.device) for i in range(len(batch.targets))
            ]
            # Loss divisors of the whole global micro-batch (sum over ranks), per rank / world:
            # with DDP's gradient averaging the gradients are those of the global batch.
            local = torch.tensor(self.criterion.normalizers(batch.targets, num_queries), dtype=torch.float64)
            count, weight_sum = all_reduce_sum(local.to(self.device)).tolist()
            normalizers = (max(count, 1.0) / world, weight_sum / world)
            images = self.model.normalize(batch.images.to(self.device, non_blocking=True))
            sync = world == 1 or j == cfg.accumulate - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():  # type: ignore[operator]
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                    outputs = self.ddp(images)
                losses = self.criterion(outputs, batch.targets, generators, normalizers)
                total = self.criterion.total(losses)
                self.scaler.scale(total / cfg.accumulate).backward()
            values = [total.detach()] + [losses[k].detach() for k in ("loss_ce", "loss_mask", "loss_dice")]
            sums += torch.stack([v.double().cpu() for v in values]) / cfg.accumulate
        # Global values: each rank's losses are its share of the global batch's times the world.
        sums = all_reduce_sum(sums.to(self.device)).cpu() / world
        loss, loss_ce, loss_mask, loss_dice = sums.tolist()
        if not math.isfinite(loss):  # the same on every rank: all stop together
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"training diverged: the loss is {loss} at step {self.step + 1} (learning rate {lr:.3g}); "
                f"lower --lr (e.g. --lr {cfg.lr / 10:.3g}) or check the data"
            )
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm if cfg.clip_grad_norm > 0 else math.inf)
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {
            "loss": loss,
            "loss_ce": loss_ce,
            "loss_mask": loss_mask,
            "loss_dice": loss_dice,
            "lr": lr,
            "grad_norm": grad_norm,
            "step_time": time.perf_counter() - t0,
            "data_time": data_time,
        }

    def train(self, on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
        """Run until ``config.iterations``; returns the final checkpoint and metrics.

        ``on_step(step, scalars)`` is called after every step (after its logging and checkpoint).
        """
        from tqdm import tqdm

        cfg = self.config
        start = time.perf_counter()
        history: list[dict[str, Any]] = []
        last: dict[str, float] = {"loss": float("nan")}
        smoothed: float | None = None
        bar = tqdm(
            total=cfg.iterations,
            initial=self.step,
            desc="train",
            unit="it",
            disable=(None if self.progress is None else not self.progress) if self.dist.is_main else True,
            dynamic_ncols=True,
        )
        # Off a terminal (progress None: CI logs, nohup, pipes) a line every few seconds instead.
        status = StatusLine() if self.progress is None and bar.disable and self.dist.is_main else None
        first_step = self.step
        metrics: EvalResult | None = None
        if self.resumed_from_world_size is not None:
            self._log(
                {
                    "step": self.step,
                    "resumed": True,
                    "world_size": self.world_size,
                    "previous_world_size": self.resumed_from_world_size,
                }
            )
        try:
            while self.step < cfg.iterations:
                last = self.train_step()
                smoothed = last["loss"] if smoothed is None else 0.9 * smoothed + 0.1 * last["loss"]
                bar.update(1)
                bar.set_postfix(loss=f"{smoothed:.3f}", lr=f"{last['lr']:.2e}", refresh=False)
                if status is not None:
                    rate = (self.step - first_step) / max(status.elapsed(), 1e-9)
                    eta = (cfg.iterations - self.step) / rate if rate > 0 else float("nan")
                    status.update(
                        f"train step {self.step}/{cfg.iterations}  loss {smoothed:.3f}  lr {last['lr']:.2e}  "
                        f"{status.elapsed():.0f} s, ETA {eta:.0f} s",
                        # the last step is always shown, except for runs too short to need progress
                        force=self.step == cfg.iterations and status.elapsed() >= status.every,
                    )
                if self.step % cfg.log_period == 0 or self.step == cfg.iterations or self.step == 1:
                    record = {"step": self.step, **{k: round(v, 6) for k, v in last.items()}}
                    record["elapsed_s"] = round(time.perf_counter() - start, 3)
                    record["world_size"] = self.world_size
                    record["per_rank_batch"] = self.rank_batch
                    history.append(record)
                    self._log(record)
                done = self.step == cfg.iterations
                if cfg.eval_period and self.step % cfg.eval_period == 0 and not done:
                    result = self.evaluate()
                    if result is not None:
                        self._log({"step": self.step, "eval": result.to_dict()})
                periodic = bool(cfg.checkpoint_period) and self.step % cfg.checkpoint_period == 0
                if self.dist.is_main and (periodic or done):
                    self._save_state()
                    if not done:
                        self._save_model(None, last["loss"])
                if on_step is not None:
                    on_step(self.step, last)
        finally:
            bar.close()
        metrics = self.evaluate(progress=self.progress)
        if metrics is not None:
            self._log({"step": self.step, "eval": metrics.to_dict()})
        seconds = time.perf_counter() - start
        checkpoint = self.out_dir / MODEL_FILE
        if self.dist.is_main:
            checkpoint = self._save_model(metrics, last["loss"], seconds)
        return TrainResult(checkpoint, self.step, seconds, last["loss"], metrics, history)


def model_config_for(preset: str, meta: DatasetMeta) -> PEMConfig:
    """The preset's config with the dataset's class names and thing ids (for panoptic models)."""
    cfg = get_preset(preset)
    if cfg.num_classes != meta.num_classes:
        raise ConfigError(
            f"preset {preset} has {cfg.num_classes} classes, the {meta.name} data {meta.num_classes}"
        )
    if cfg.class_names and cfg.class_names != meta.class_names:
        raise ConfigError(f"preset {preset} class names differ from the {meta.name} label table")
    things = meta.thing_ids if cfg.task == "panoptic" else ()
    return cfg.replace(class_names=meta.class_names, thing_ids=things)


def run_training(
    preset: str,
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    val_split: str | None = "val",
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    extra_metadata: dict[str, Any] | None = None,
    exist_ok: bool = False,
) -> TrainResult:
    """Train preset ``preset`` on the dataset folder ``data`` (Cityscapes layout for
    ``cityscapes-*`` presets, the synthetic set included; ADE20K for ``ade20k-*``).

    ``config`` defaults to :func:`pem.train.config.train_preset`. The task (semantic or
    panoptic targets) is the preset's. ``val_split=None`` skips evaluation. ``exist_ok``: a new
    run may start in a folder holding other files (see :class:`Trainer`); ``data`` is never written.
    """
    from pem.data import open_dataset

    model_cfg = get_preset(preset)
    dataset = preset.split("-")[0]
    config = config or train_preset(preset)
    train_set = open_dataset(data, dataset, "train", model_cfg.task)  # type: ignore[arg-type]
    val_set = open_dataset(data, dataset, val_split, model_cfg.task) if val_split else None  # type: ignore[arg-type]
    model_cfg = model_config_for(preset, train_set.meta)
    extra = {"dataset": str(Path(data)), "preset": preset, **(extra_metadata or {})}
    trainer = Trainer(
        model_cfg,
        config,
        train_set,
        out_dir,
        val_set,
        device,
        progress,
        resume,
        extra,
        exist_ok=exist_ok,
        inputs=(data,),
    )
    created = not trainer.out_dir.exists()
    try:
        return trainer.train()
    except BaseException:
        # a run that failed before writing anything (full disk, read-only...) leaves no empty folder
        if (
            created
            and trainer.dist.is_main
            and trainer.out_dir.is_dir()
            and not any(trainer.out_dir.iterdir())
        ):
            trainer.out_dir.rmdir()
        raise
