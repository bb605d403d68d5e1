"""Distributed training and evaluation (2 CPU ranks, gloo), training norms, ADE20K metadata.

The 2-rank runs go through the code path of ``torchrun``: each process gets ``RANK`` /
``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` and the trainer joins the
group from ``env://``. One spawn runs every distributed scenario; the single-process references
run in the test process.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from pem.checkpoint import load_checkpoint, load_official_checkpoint
from pem.config import ConfigError, get_preset
from pem.data.cityscapes import CityscapesDataset
from pem.data.synthetic import SyntheticConfig, make_synthetic
from pem.datasets_meta import ADE20K_PANOPTIC_THING_IDS
from pem.evaluation import evaluate
from pem.model import PEM
from pem.norm import FrozenBatchNorm2d, freeze_batch_norm
from pem.train import TrainConfig
from pem.train.trainer import MODEL_FILE, STATE_FILE, Trainer, model_config_for
from tests.helpers.train_runs import TINY_RUN

# Every BatchNorm synchronised, so the 2-rank run must match the single-process one.
RUN = TINY_RUN.replace(iterations=3, batch_size=4, sync_bn="all")
PRESET = "cityscapes-panoptic-tiny"


class _Interrupt(Exception):
    pass


def _stop_at_2(step: int, _: dict) -> None:
    if step == 2:
        raise _Interrupt


def _trainer(synth: Path, out: Path, config: TrainConfig, val: bool = False, resume: bool = False) -> Trainer:
    train_set = CityscapesDataset(synth, "train", "panoptic")
    val_set = CityscapesDataset(synth, "val", "panoptic") if val else None
    cfg = model_config_for(PRESET, train_set.meta)
    return Trainer(cfg, config, train_set, out, val_set, device="cpu", progress=False, resume=resume)


def _sync_bn_case(rank: int, world: int) -> dict[str, torch.Tensor]:
    """A BatchNorm converted as the trainer does, fed this rank's half of a seeded batch."""
    from pem.distributed import convert_sync_batch_norm

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, 5, 6, generator=gen) * 3 + 1
    w = torch.randn(4, 3, 5, 6, generator=gen)
    bn = nn.Sequential(nn.BatchNorm2d(3))
    with torch.no_grad():
        bn[0].weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        bn[0].bias.copy_(torch.tensor([0.1, 0.0, -0.2]))
    if world > 1:
        convert_sync_batch_norm(bn, "all", torch.device("cpu"))
        part = slice(rank * 4 // world, (rank + 1) * 4 // world)
        x, w = x[part], w[part]
    x = x.clone().requires_grad_(True)
    out = bn(x)
    (out * w).sum().backward()
    return {
        "type": type(bn[0]).__name__,
        "out": out.detach(),
        "grad_x": x.grad,
        "grad_weight": bn[0].weight.grad,
        "running_mean": bn[0].running_mean.clone(),
        "running_var": bn[0].running_var.clone(),
    }


def _worker(rank: int, world: int, port: int, synth: str, work: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    from pem.distributed import batch_norm_types, init_distributed, shutdown

    ctx = init_distributed("cpu", timeout_s=120)
    assert ctx.world_size == world and ctx.rank == rank
    work_dir, synth_dir = Path(work), Path(synth)
    try:
        # Full run (3 steps) with the final distributed evaluation, then a run killed at step 2.
        trainer = _trainer(synth_dir, work_dir / "ddp", RUN, val=True)
        trainer.train()
        with pytest.raises(_Interrupt):
            _trainer(synth_dir, work_dir / "ddp_killed", RUN).train(on_step=_stop_at_2)
        # Distributed evaluation of the trained weights, one image per chunk (3 images: 2 + 1).
        val = CityscapesDataset(synth_dir, "val", "panoptic")
        metrics = evaluate(trainer.model, val, batch_size=1)
        # The official SyncBN choice on this model.
        official = _trainer(synth_dir, work_dir / "official", RUN.replace(sync_bn="official"))
        case = _sync_bn_case(rank, world)
        torch.save(case, work_dir / f"syncbn_{rank}.pt")
        if rank == 0:
            (work_dir / "eval.json").write_text(json.dumps(metrics.to_dict()))
            (work_dir / "norms.json").write_text(
                json.dumps({"types": batch_norm_types(official.model), "synced": official.sync_bn_modules})
            )
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist_synth") / "set"
    return make_synthetic(root, SyntheticConfig(train=8, val=3, size=(64, 128), seed=11))


@pytest.fixture(scope="module")
def two_ranks(synth, tmp_path_factory) -> Path:
    """Runs every 2-rank scenario once; returns the folder with their outputs."""
    import torch.multiprocessing as mp

    work = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(synth), str(work)), nprocs=2, join=True)
    return work


@pytest.fixture(scope="module")
def single(synth, tmp_path_factory) -> Trainer:
    trainer = _trainer(synth, tmp_path_factory.mktemp("single") / "run", RUN)
    trainer.train()
    return trainer


def _assert_weights_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Every weight and buffer within 1e-5 after the 3 steps (measured on a 2-core AMD EPYC:
    8.3e-6 at most, a BatchNorm running variance of ~3.6; 4.9e-6 for the parameters).

    The runs differ only by float rounding (batch 4 vs 2 + 2, all-reduced sums), so this holds
    only while the loss is a continuous function of the weights: the matcher orders the targets
    it cannot tell apart canonically (see :mod:`pem.train.matcher`); before, rounding noise
    picked their queries and step 2's gradients differed by up to 8%.
    """
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=0, atol=1e-5, msg=key)


# ---------------------------------------------------------------------------------------------
# Two ranks vs one process


def test_two_ranks_train_the_single_process_weights(two_ranks, single):
    ddp = load_checkpoint(two_ranks / "ddp" / MODEL_FILE)
    _assert_weights_close(ddp.state_dict(), single.model.state_dict())
    # The weights moved (the comparison is not between two initialisations).
    init = PEM(single.model_config).state_dict()
    assert any((init[k] - v).abs().max() > 1e-4 for k, v in ddp.state_dict().items() if v.is_floating_point())
    meta = json.loads((two_ranks / "ddp" / "model.json").read_text())
    assert meta["world_size"] == 2 and meta["per_rank_batch"] == 2 and meta["step"] == 3
    records = [json.loads(line) for line in (two_ranks / "ddp" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(r["world_size"] == 2 and r["per_rank_batch"] == 2 for r in steps)
    single_records = [
        json.loads(line) for line in (single.out_dir / "metrics.jsonl").read_text().splitlines()
    ]
    for mine, ref in zip(steps, [r for r in single_records if "loss" in r]):
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-5)


def test_resume_with_another_world_size_continues(two_ranks, single, synth):
    killed = two_ranks / "ddp_killed"
    assert (killed / STATE_FILE).is_file()
    resumed = _trainer(synth, killed, RUN, resume=True)
    assert resumed.step == 2 and resumed.resumed_from_world_size == 2
    resumed.train()
    _assert_weights_close(resumed.model.state_dict(), single.model.state_dict())
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 2, "resumed": True, "world_size": 1, "previous_world_size": 2} in records
    # A world size that does not split the global micro-batch is refused in one line.
    with pytest.raises(ConfigError, match="do not split over 3 ranks"):
        RUN.rank_batch(3)
    with pytest.raises(ConfigError, match="1 image per rank"):
        RUN.replace(sync_bn="off").rank_batch(4)
    assert RUN.rank_batch(4) == 1  # synchronised BN: one image per rank is fine


def test_distributed_evaluation_equals_single_process(two_ranks, synth):
    model = load_checkpoint(two_ranks / "ddp" / MODEL_FILE)
    val = CityscapesDataset(synth, "val", "panoptic")
    alone = evaluate(model, val, batch_size=1).to_dict()
    assert json.loads((two_ranks / "eval.json").read_text()) == json.loads(json.dumps(alone))
    assert alone["images"] == 3 and alone["semantic"]["pixel_accuracy"] > 0
    # The trainer's own final evaluation ran distributed too and was recorded by rank 0.
    meta = json.loads((two_ranks / "ddp" / "model.json").read_text())
    assert meta["metrics"] == json.loads(json.dumps(evaluate(model, val).to_dict()))


def test_sync_batch_norm_equals_full_batch_batch_norm(two_ranks):
    full = _sync_bn_case(0, 1)
    parts = [torch.load(two_ranks / f"syncbn_{r}.pt") for r in range(2)]
    assert parts[0]["type"] == "GlooSyncBatchNorm"
    torch.testing.assert_close(torch.cat([p["out"] for p in parts]), full["out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([p["grad_x"] for p in parts]), full["grad_x"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts[0]["grad_weight"] + parts[1]["grad_weight"], full["grad_weight"])
    for key in ("running_mean", "running_var"):
        torch.testing.assert_close(parts[0][key], full[key], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(parts[1][key], full[key], atol=1e-6, rtol=1e-6)


def test_official_sync_bn_choice(two_ranks):
    norms = json.loads((two_ranks / "norms.json").read_text())
    types = norms["types"]
    assert norms["synced"][0] == "sem_seg_head.pixel_decoder"
    assert all(v == "GlooSyncBatchNorm" for k, v in types.items() if k.startswith("sem_seg_head"))
    assert any(k.endswith("feature_proj.bn") for k in types)
    # STDC: plain BN, as the official code builds it whatever MODEL.STDC.NORM says.
    assert all(v == "BatchNorm2d" for k, v in types.items() if k.startswith("backbone"))


# ---------------------------------------------------------------------------------------------
# Training norms and ADE20K metadata (single process)


def test_frozen_batch_norm_equals_eval_batch_norm():
    torch.manual_seed(3)
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    block.train()
    block(torch.randn(6, 3, 9, 9))  # non-trivial running statistics
    block.eval()
    x = torch.randn(2, 3, 9, 9)
    expected = block(x)
    frozen = freeze_batch_norm(block)
    assert isinstance(frozen[1], FrozenBatchNorm2d)
    assert set(frozen.state_dict()) == {
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
    }
    frozen.train()  # training mode too: statistics stay fixed, nothing to learn
    assert torch.equal(frozen(x), expected)
    assert [n for n, _ in frozen.named_parameters()] == ["0.weight", "0.bias"]


def test_presets_follow_the_official_norms_and_ade20k_things():
    ade = get_preset("ade20k-panoptic-r50")
    assert ade.backbone.norm == "FrozenBN" and get_preset("ade20k-semantic-r50").backbone.norm == "FrozenBN"
    assert get_preset("cityscapes-semantic-r50").backbone.norm == "SyncBN"
    assert get_preset("ade20k-panoptic-stdc1").backbone.norm == "BN"
    assert ade.thing_ids == ADE20K_PANOPTIC_THING_IDS and len(ade.thing_ids) == 100
    assert {7, 12, 20, 149} <= set(ade.thing_ids) and not {0, 1, 2, 3} & set(
        ade.thing_ids
    )  # bed..flag / wall..floor
    assert get_preset("ade20k-semantic-r50").thing_ids == ()


def test_official_checkpoint_from_memory_and_frozen_bn_backbone():
    from pem.backbones import build_backbone

    backbone = build_backbone(get_preset("ade20k-panoptic-r50").backbone)
    norms = [m for m in backbone.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    model = PEM(get_preset(PRESET))
    state = {k: v.clone() + 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    target = PEM(get_preset(PRESET))
    report = load_official_checkpoint(target, {"model": {f"module.{k}": v for k, v in state.items()}})
    assert report.ok and torch.equal(
        target.state_dict()["sem_seg_head.predictor.query_feat.weight"],
        state["sem_seg_head.predictor.query_feat.weight"],
    )
    with pytest.raises(Exception, match="state dict: checkpoint does not fit"):
        load_official_checkpoint(target, {"bogus": torch.zeros(1)})
