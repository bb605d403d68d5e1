"""Model commands: ``info``, ``make-synthetic``, ``train``, ``eval`` (parse, delegate to ``pem``, print)."""

# ruff: noqa: UP045  (typer reads the option groups' annotations at run time: Optional for Python 3.10)

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import typer

from commands import groups
from commands import options as opt
from commands.common import missing_files_in_own_words, prepare_eager_torch
from contract.errors import UsageError

if TYPE_CHECKING:
    from pem.config import PEMConfig
    from pem.flops import ModelCost
    from pem.train import TrainConfig

SET = opt.SET_BY_COMMAND


@groups.with_groups
def info_command(
    model: opt.ModelFlags,
    postprocess: bool = typer.Option(
        False, "--postprocess/--no-postprocess", help="Also count semantic inference (class x mask product)."
    ),
    list_presets: bool = typer.Option(False, "--list", help="List preset names and exit."),
    paper: bool = typer.Option(
        False, "--paper", help="Compare every paper row (params, GFLOPs) as markdown."
    ),
) -> None:
    """Print parameters and GFLOPs (PyTorch's FLOP counter; fvcore/paper convention: 1 MAC = 1 FLOP)."""
    from pem.config import get_preset, preset_names
    from pem.flops import count_cost

    if list_presets:
        typer.echo("\n".join(preset_names()))
        return
    if paper:
        from pem.paper import compare_with_paper, comparison_markdown

        typer.echo(comparison_markdown(compare_with_paper()))
        return
    if (model.preset is None) == (model.checkpoint is None):
        raise UsageError("give exactly one of --preset or --checkpoint")
    tensors = None
    with missing_files_in_own_words(FileNotFoundError):
        if model.checkpoint is not None:
            from pem.checkpoint import verify_checkpoint

            config, tensors = verify_checkpoint(model.checkpoint)  # opens the weights: they must fit
        else:
            config = get_preset(model.preset)
        height, width = model.height or config.input_size[0], model.width or config.input_size[1]
        config = config.replace(input_size=(height, width))
        cost = count_cost(config, with_postprocess=postprocess)
    _print_cost(config, cost, tensors)


def _print_cost(config: PEMConfig, cost: ModelCost, tensors: int | None) -> None:
    """``info``'s report: the model, its input, the checked weights, parameters and GFLOPs by part."""
    h, w = config.input_size
    typer.echo(f"model        {config.name} ({config.task}, {config.num_classes} classes)")
    typer.echo(f"input        {h}x{w}")
    if tensors is not None:
        typer.echo(f"weights      {tensors} tensors, all fit the config and are finite")
    typer.echo(f"parameters   {cost.params / 1e6:.2f} M")
    for part, macs in cost.macs_by_part.items():
        typer.echo(f"  {part:<20} {macs / 1e9:8.2f} GFLOPs")
    typer.echo(f"GFLOPs       {cost.gflops_fvcore:.2f}  (multiply-accumulates, fvcore/paper convention)")


def make_synthetic_command(
    out: str = typer.Argument(
        ..., help="Output folder (must not exist or be empty).", callback=opt.folder("OUT")
    ),
    train: int = opt.int_option(300, "--train", "Number of training images.", 0, 1_000_000),
    val: int = opt.int_option(50, "--val", "Number of validation images.", 0, 1_000_000),
    size: str = opt.hw_option("256x512", "--size", "Image size HxW."),
    seed: int = opt.int_option(0, "--seed", "Random seed (image i depends only on seed, split, i).", 0),
) -> None:
    """Generate the synthetic street-scene set in the exact Cityscapes layout (panoptic included)."""
    from pem.data.synthetic import SyntheticConfig, make_synthetic

    hw = opt.parse_hw("--size", size)
    with missing_files_in_own_words():
        path = make_synthetic(out, SyntheticConfig(train=train, val=val, size=hw, seed=seed), progress=True)
    typer.echo(f"wrote {train} train + {val} val images ({hw[0]}x{hw[1]}) to {path}")


@dataclass(frozen=True)
class RecipeFlags:
    """Changes to the preset's training recipe (``pem.train.TrainConfig.with_overrides``; None keeps it)."""

    iterations: Optional[int] = groups.declared(opt.int_option(None, "--iterations", "Optimizer steps.", 1))
    batch_size: Optional[int] = groups.declared(
        opt.int_option(None, "--batch-size", "Images per optimizer step.", 1)
    )
    accumulate: Optional[int] = groups.declared(
        opt.int_option(None, "--accumulate", "Micro-batches per step (grad accumulation).", 1)
    )
    lr: Optional[float] = groups.declared(opt.float_option(None, "--lr", "Base learning rate.", opt.POSITIVE))
    crop: Optional[str] = groups.declared(opt.hw_option(None, "--crop", "Training crop HxW."))
    num_points: Optional[int] = groups.declared(
        opt.int_option(None, "--num-points", "Points per mask for the mask losses.", 1)
    )
    seed: Optional[int] = groups.declared(opt.int_option(None, "--seed", "Random seed.", 0))
    eval_period: Optional[int] = groups.declared(
        opt.int_option(None, "--eval-period", "Evaluate every N steps (0: at the end).", 0)
    )
    checkpoint_period: Optional[int] = groups.declared(
        opt.int_option(None, "--checkpoint-period", "Checkpoint every N steps.", 0)
    )
    workers: Optional[int] = groups.declared(
        opt.int_option(None, "--workers", "Data-loading worker processes.", 0)
    )
    amp: Optional[bool] = groups.option(None, "--amp/--no-amp", help="Mixed precision (default: on CUDA).")

    def apply(self, config: TrainConfig, sync_bn: str | None) -> TrainConfig:
        """``config`` with these flags (and ``--sync-bn``) set where given."""
        return config.with_overrides(
            iterations=self.iterations, batch_size=self.batch_size, accumulate=self.accumulate,
            lr=self.lr, seed=self.seed, eval_period=self.eval_period, num_workers=self.workers,
            checkpoint_period=self.checkpoint_period, amp=self.amp, sync_bn=sync_bn,
            num_points=self.num_points, crop_size=opt.parse_hw("--crop", self.crop) if self.crop else None,
        )  # fmt: skip


@groups.with_groups
def train_command(
    preset: str = typer.Option(..., "--preset", help="Model preset (see `info --list`); sets the recipe."),
    data: opt.Dataset = ...,
    out: str = opt.folder_option(None, "--out", "Output folder (default: runs/PRESET)."),
    *,
    recipe: RecipeFlags,
    device: str = opt.device_option(None, "cpu, cuda, cuda:1 ... (default: cuda if available)."),
    threads: opt.ThreadsAllCores = None,  # type: ignore[assignment]
    val_split: str = opt.split_option("val", "--val-split", "Split evaluated during / after training"),
    no_eval: bool = typer.Option(False, "--no-eval", help="Do not evaluate."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    exist_ok: bool = opt.exist_ok_option(
        "Start a new run in an --out folder holding other files (they are never replaced)."
    ),
    sync_bn: str = typer.Option(
        None, "--sync-bn", help="Under torchrun: official (default), all or off (which BN syncs)."
    ),
) -> None:
    """Train a preset on a dataset (checkpoints, metrics.jsonl, progress bar with loss and ETA).

    Several GPUs / nodes: launch it with 'torchrun --nproc-per-node N [--nnodes M ...]';
    --batch-size stays the global batch (README, "Training at scale").
    """
    from pem.train import run_training, train_preset

    prepare_eager_torch(threads)
    with missing_files_in_own_words():
        config = recipe.apply(train_preset(preset), sync_bn)
        result = run_training(
            preset, data, out or f"runs/{preset}", config, val_split=None if no_eval else val_split,
            resume=resume, device=device, progress=None, exist_ok=exist_ok,
        )  # fmt: skip
    if not _main_process_after_shutdown():
        return
    typer.echo(f"trained {result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.3f}")
    if result.metrics is not None:
        typer.echo(result.metrics.summary())
    typer.echo(f"checkpoint   {result.checkpoint}")


def _main_process_after_shutdown() -> bool:
    """Whether this is the process that prints (under torchrun every rank runs the command), once the
    process group is shut down."""
    from pem.distributed import current_context, shutdown

    main = current_context().is_main
    shutdown()
    return main


@dataclass(frozen=True)
class EvalFlags:
    """Which images ``eval`` scores and how (``pem.evaluation.evaluate_checkpoint``'s keywords)."""

    split: str = groups.option("val", "--split", help="Split to evaluate.")
    task: Optional[str] = groups.option(
        None, "--task", help="semantic or panoptic (default: the model's task)."
    )
    batch_size: int = groups.declared(opt.int_option(4, "--batch-size", "Images per forward pass.", 1))
    limit: Optional[int] = groups.declared(
        opt.int_option(None, "--limit", "Evaluate only the first N images.", 1)
    )
    short_side: Optional[int] = groups.declared(
        opt.int_option(None, "--short-side", "Resize short side first (ADE20K 512/640).", 32, 32768)
    )


@groups.with_groups
def eval_command(
    checkpoint: str = typer.Option(..., "--checkpoint", help="Our .safetensors checkpoint."),
    data: opt.Dataset = ...,
    *,
    scoring: EvalFlags,
    device: str = opt.device_option(None, "cpu, cuda ... (default: cuda if available)."),
    json_out: str = typer.Option(
        None, "--json", help="Also write the metrics to this JSON file.", callback=opt.file("--json")
    ),
    save_predictions: str = opt.folder_option(
        None, "--save-predictions", "Write predictions in the official Cityscapes evaluators' formats."
    ),
    exist_ok: bool = opt.exist_ok_option(
        "Allow a --save-predictions folder holding other files (ours are added beside them)."
    ),
    overwrite: bool = opt.overwrite_option(
        "Replace an existing --json file, or prediction files pem-deploy did not write."
    ),
    threads: opt.Threads = 1,
) -> None:
    """Evaluate a checkpoint: mIoU (per class + mean) and, for panoptic models, PQ / SQ / RQ."""
    from contract.output import check_file, write_file
    from pem.checkpoint import checkpoint_files
    from pem.evaluation import evaluate_checkpoint

    read = [*checkpoint_files(checkpoint), data]  # never written, whatever the flags
    if json_out:  # refused before the evaluation, not after it
        check_file(json_out, overwrite=overwrite, inputs=read)
    prepare_eager_torch(threads)
    with missing_files_in_own_words():
        result = evaluate_checkpoint(
            checkpoint, data, **dataclasses.asdict(scoring), device=device, progress=None,
            save_predictions=save_predictions, exist_ok=exist_ok, overwrite=overwrite,
        )  # fmt: skip
    if not _main_process_after_shutdown():  # under torchrun every rank evaluates a shard
        return
    if json_out:  # before the summary: a failed write is then the only output
        write_file(json_out, json.dumps(result.to_dict(), indent=2) + "\n", overwrite=overwrite, inputs=read)
    typer.echo(result.summary())
