"""Evaluation: mIoU (per class + mean) and PQ / SQ / RQ (all, things, stuff).

The definitions are those of the Cityscapes evaluators in ``cityscapesscripts``
(``evalPixelLevelSemanticLabeling``, ``evalPanopticSemanticLabeling``, the COCO panoptic rules):

- IoU of a class = TP / (TP + FP + FN) over all images, pixels whose ground truth is ignored
  (255) do not count; the mean runs over the classes with TP + FP + FN > 0.
- PQ: a predicted and a ground-truth segment of the same class match when IoU > 0.5, the union
  not counting the prediction's pixels on void; unmatched non-crowd ground truth is a FN; an
  unmatched prediction is a FP unless more than half of it lies on void or on a crowd region of
  its class. Per class PQ = sum IoU / (TP + FP/2 + FN), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN);
  averages over the classes with TP + FP + FN > 0.

``tests/pem/test_evaluation.py`` checks both against ``cityscapesscripts`` on generated cases.

Distributed evaluation (under ``torchrun``): the images are cut into chunks of ``batch_size``
consecutive images, rank ``r`` evaluates chunks ``r, r + N, ...``, and the confusion matrices and
PQ statistics are summed over ranks (integer counts with ``all_reduce``; the IoU sums are exact
sums of all matched IoUs, ``math.fsum``, independent of their order), so the result equals the
single-process evaluation exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contract.vocabulary import TASKS
from pem.config import ConfigError, PEMConfig, preset_eval_size, preset_names
from pem.data.common import IGNORE_LABEL, DatasetError, DatasetMeta, Sample, SegmentationDataset, SegmentInfo
from pem.distributed import all_gather_objects, all_reduce_sum, current_context, init_distributed, rank_device
from pem.inference import PanopticResult, panoptic_inference

_OFFSET = 256 * 256 * 256


# ---------------------------------------------------------------------------------------------
# Semantic


@dataclass
class SemanticMetrics:
    """``miou`` over evaluated classes; ``per_class`` IoU by name (NaN: class absent and never predicted)."""

    miou: float
    per_class: dict[str, float]
    pixel_accuracy: float
    confusion: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mIoU": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "per_class": {k: (None if math.isnan(v) else v) for k, v in self.per_class.items()},
        }


class SemanticEvaluator:
    """Accumulates a (K, K) confusion matrix (rows = ground truth, columns = prediction)."""

    def __init__(self, class_names: Sequence[str], ignore_label: int = IGNORE_LABEL):
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.ignore_label = ignore_label
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, ground_truth: np.ndarray) -> None:
        """Add one image: ``prediction`` (H, W) class ids in 0..K-1, ``ground_truth`` (H, W) with ignore."""
        prediction = np.asarray(prediction)
        ground_truth = np.asarray(ground_truth)
        if prediction.shape != ground_truth.shape:
            raise ValueError(
                f"prediction {prediction.shape} and ground truth {ground_truth.shape} differ in size"
            )
        valid = ground_truth != self.ignore_label
        gt = ground_truth[valid].astype(np.int64)
        pred = prediction[valid].astype(np.int64)
        if gt.size and (gt.max() >= self.num_classes or gt.min() < 0):
            raise ValueError(f"ground-truth class ids outside 0..{self.num_classes - 1}")
        if pred.size and (pred.max() >= self.num_classes or pred.min() < 0):
            raise ValueError(f"predicted class ids outside 0..{self.num_classes - 1}")
        k = self.num_classes
        self.confusion += np.bincount(gt * k + pred, minlength=k * k).reshape(k, k)

    def all_reduce(self) -> None:
        """Sum the confusion matrix over the ranks of a distributed run (no-op in one process)."""
        self.confusion = all_reduce_sum(torch.from_numpy(self.confusion)).numpy()

    def compute(self) -> SemanticMetrics:
        conf = self.confusion
        tp = np.diag(conf)
        fn = conf.sum(1) - tp
        fp = conf.sum(0) - tp
        per_class: dict[str, float] = {}
        for i, name in enumerate(self.class_names):
            denom = int(tp[i] + fp[i] + fn[i])
            per_class[name] = float(tp[i]) / denom if denom else float("nan")
        valid = [v for v in per_class.values() if not math.isnan(v)]
        miou = sum(valid) / len(valid) if valid else float("nan")
        total = int(conf.sum())
        accuracy = float(tp.sum()) / total if total else float("nan")
        return SemanticMetrics(miou, per_class, accuracy, conf.copy())


# ---------------------------------------------------------------------------------------------
# Panoptic


@dataclass
class PQGroup:
    """PQ / SQ / RQ averaged over ``n`` classes."""

    pq: float
    sq: float
    rq: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return {"PQ": self.pq, "SQ": self.sq, "RQ": self.rq, "n": self.n}


@dataclass
class PanopticMetrics:
    """PQ over all / thing / stuff classes and per class (name -> {PQ, SQ, RQ}; None if not evaluated)."""

    all: PQGroup
    things: PQGroup
    stuff: PQGroup
    per_class: dict[str, dict[str, float] | None]

    @property
    def pq(self) -> float:
        return self.all.pq

    def to_dict(self) -> dict[str, Any]:
        return {
            "PQ": self.all.pq,
            "SQ": self.all.sq,
            "RQ": self.all.rq,
            "PQ_th": self.things.pq,
            "PQ_st": self.stuff.pq,
            "all": self.all.to_dict(),
            "things": self.things.to_dict(),
            "stuff": self.stuff.to_dict(),
            "per_class": self.per_class,
        }


@dataclass
class _ClassStat:
    ious: list[float] = field(default_factory=list)  # IoU of every true positive
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def iou(self) -> float:
        """Sum of the true positives' IoU, exactly rounded (does not depend on their order)."""
        return math.fsum(self.ious)


class PanopticEvaluator:
    """Accumulates PQ statistics per class over images (contiguous class ids of ``meta``)."""

    def __init__(self, meta: DatasetMeta):
        self.meta = meta
        self.things = set(meta.thing_ids)
        self.stats = [_ClassStat() for _ in range(meta.num_classes)]

    def update(
        self,
        pred_map: np.ndarray,
        pred_segments: Sequence[tuple[int, int]],
        gt_map: np.ndarray,
        gt_segments: Sequence[SegmentInfo],
    ) -> None:
        """Add one image.

        Args:
            pred_map: (H, W) predicted segment ids (0 = void).
            pred_segments: (segment id, class id) of every predicted segment.
            gt_map: (H, W) ground-truth segment ids (0 = void).
            gt_segments: the ground-truth segments.
        """
        pred_map = np.asarray(pred_map, dtype=np.int64)
        gt_map = np.asarray(gt_map, dtype=np.int64)
        if pred_map.shape != gt_map.shape:
            raise ValueError(f"prediction {pred_map.shape} and ground truth {gt_map.shape} differ in size")
        pred_cat = {int(i): int(c) for i, c in pred_segments}
        gt_info = {s.id: s for s in gt_segments}
        ids, counts = np.unique(pred_map, return_counts=True)
        pred_area = {int(i): int(c) for i, c in zip(ids, counts) if i != 0}
        unknown = set(pred_area) - set(pred_cat)
        if unknown:
            raise ValueError(f"predicted segment ids {sorted(unknown)[:5]} have no class")
        missing = set(pred_cat) - set(pred_area)
        if missing:
            raise ValueError(f"predicted segments {sorted(missing)[:5]} have no pixels")
        gids, gcounts = np.unique(gt_map, return_counts=True)
        gt_area = {int(i): int(c) for i, c in zip(gids, gcounts)}

        pairs, inter = np.unique(gt_map * _OFFSET + pred_map, return_counts=True)
        overlap = {(int(p // _OFFSET), int(p % _OFFSET)): int(n) for p, n in zip(pairs, inter)}
        gt_matched: set[int] = set()
        pred_matched: set[int] = set()
        for (g, p), n in overlap.items():
            if g not in gt_info or p not in pred_cat:
                continue
            seg = gt_info[g]
            if seg.iscrowd or seg.category_id != pred_cat[p]:
                continue
            union = pred_area[p] + gt_area.get(g, 0) - n - overlap.get((0, p), 0)
            iou = n / union
            if iou > 0.5:
                stat = self.stats[seg.category_id]
                stat.tp += 1
                stat.ious.append(iou)
                gt_matched.add(g)
                pred_matched.add(p)

        crowd_of_class: dict[int, int] = {}
        for seg in gt_segments:
            if seg.id in gt_matched:
                continue
            if seg.iscrowd:
                crowd_of_class[seg.category_id] = seg.id
                continue
            self.stats[seg.category_id].fn += 1
        for p, category in pred_cat.items():
            if p in pred_matched:
                continue
            excused = overlap.get((0, p), 0)
            if category in crowd_of_class:
                excused += overlap.get((crowd_of_class[category], p), 0)
            if excused / pred_area[p] > 0.5:
                continue
            self.stats[category].fp += 1

    def all_reduce(self) -> None:
        """Sum the statistics over the ranks of a distributed run (no-op in one process)."""
        counts = torch.tensor([[s.tp, s.fp, s.fn] for s in self.stats], dtype=torch.int64)
        counts = all_reduce_sum(counts).tolist()
        ious = all_gather_objects([s.ious for s in self.stats])
        for k, stat in enumerate(self.stats):
            stat.tp, stat.fp, stat.fn = counts[k]
            stat.ious = [v for rank in ious for v in rank[k]]

    def _average(self, isthing: bool | None) -> tuple[PQGroup, dict[str, dict[str, float] | None]]:
        pq = sq = rq = 0.0
        n = 0
        per_class: dict[str, dict[str, float] | None] = {}
        for k, stat in enumerate(self.stats):
            if isthing is not None and (k in self.things) != isthing:
                continue
            name = self.meta.class_names[k]
            if stat.tp + stat.fp + stat.fn == 0:
                per_class[name] = None
                continue
            n += 1
            denom = stat.tp + 0.5 * stat.fp + 0.5 * stat.fn
            pq_k, sq_k, rq_k = stat.iou / denom, (stat.iou / stat.tp if stat.tp else 0.0), stat.tp / denom
            per_class[name] = {"PQ": pq_k, "SQ": sq_k, "RQ": rq_k}
            pq += pq_k
            sq += sq_k
            rq += rq_k
        if n == 0:
            return PQGroup(0.0, 0.0, 0.0, 0), per_class
        return PQGroup(pq / n, sq / n, rq / n, n), per_class

    def compute(self) -> PanopticMetrics:
        all_group, per_class = self._average(None)
        return PanopticMetrics(all_group, self._average(True)[0], self._average(False)[0], per_class)


# ---------------------------------------------------------------------------------------------
# Running a model over a dataset


@dataclass
class EvalResult:
    """Metrics of one evaluation (``semantic`` and / or ``panoptic``) and the image count."""

    images: int
    semantic: SemanticMetrics | None = None
    panoptic: PanopticMetrics | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"images": self.images}
        if self.semantic is not None:
            out["semantic"] = self.semantic.to_dict()
        if self.panoptic is not None:
            out["panoptic"] = self.panoptic.to_dict()
        return out

    def summary(self) -> str:
        """Multi-line human-readable report (percentages)."""
        lines = [f"images       {self.images}"]
        if self.semantic is not None:
            lines.append(f"mIoU         {100 * self.semantic.miou:.2f}")
            for name, iou in self.semantic.per_class.items():
                if not math.isnan(iou):
                    lines.append(f"  {name:<18} {100 * iou:6.2f}")
        if self.panoptic is not None:
            p = self.panoptic
            lines.append(f"{'':13}{'PQ':>6} {'SQ':>6} {'RQ':>6}  n")
            for label, g in (("all", p.all), ("things", p.things), ("stuff", p.stuff)):
                lines.append(f"PQ {label:<9} {100 * g.pq:6.2f} {100 * g.sq:6.2f} {100 * g.rq:6.2f}  {g.n}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Prediction:
    """Per image: semantic labels (H, W) int64 and the panoptic result (or None)."""

    semantic: np.ndarray | None
    panoptic: PanopticResult | None


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: Tensor,
    semantic: bool = True,
    panoptic: bool = True,
    short_side: int | None = None,
    max_size: int = 4096,
) -> list[Prediction]:
    """Run ``model`` on RGB 0-255 ``images`` (B, 3, H, W) and post-process at (H, W).

    With ``short_side`` the images are first resized (short side, long side <= ``max_size``);
    mask logits are upsampled to the padded size, cropped, and resized back to (H, W)
    (detectron2's ``sem_seg_postprocess``).
    """
    h, w = images.shape[-2:]
    x = images.float()
    if short_side is not None:
        scale = min(short_side / min(h, w), max_size / max(h, w))
        rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
        if (rh, rw) != (h, w):
            x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
    rh, rw = x.shape[-2:]
    x = F.pad(model.normalize(x), (0, (-rw) % 32, 0, (-rh) % 32))
    out = model(x)
    cfg = model.config
    results = []
    for logits, masks in zip(out["pred_logits"], out["pred_masks"]):
        masks = F.interpolate(masks[None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        masks = masks[..., :rh, :rw]
        if (rh, rw) != (h, w):
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
        masks = masks[0]
        sem = None
        if semantic:
            probs = logits.float().softmax(-1)[:, :-1]
            sem = torch.einsum("qk,qhw->khw", probs, masks.sigmoid()).argmax(0).cpu().numpy()
        pan = None
        if panoptic:
            pan = panoptic_inference(
                logits.float(),
                masks,
                cfg.thing_ids,
                cfg.inference.object_mask_threshold,
                cfg.inference.overlap_threshold,
            )
        results.append(Prediction(sem, pan))
    return results


def evaluate(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    *,
    semantic: bool = True,
    panoptic: bool | None = None,
    batch_size: int = 4,
    short_side: int | None = None,
    max_size: int = 4096,
    limit: int | None = None,
    progress: bool | None = False,
    on_prediction: Callable[[Sample, Prediction], None] | None = None,
    distributed: bool | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset``.

    ``panoptic=None`` evaluates PQ when both the dataset and the model are panoptic. Images are
    batched by chunks of ``batch_size`` consecutive images (a chunk is split where the image
    size changes); ``limit`` evaluates only the first images. ``progress=None``: a bar when on a
    TTY. ``on_prediction(sample, prediction)`` is called for every image this process evaluates
    (e.g. to write predictions to files).

    ``distributed`` (default: when a process group of several ranks is initialised): every rank
    must call this; each evaluates its share of the chunks and all return the same result,
    equal to the single-process one.
    """
    from tqdm import tqdm

    if panoptic is None:
        panoptic = dataset.task == "panoptic" and model.config.task == "panoptic"
    if panoptic and (dataset.task != "panoptic" or model.config.task != "panoptic"):
        raise ConfigError("panoptic evaluation needs a panoptic dataset and a panoptic model")
    meta = dataset.meta
    if model.config.num_classes != meta.num_classes:
        raise ConfigError(f"model has {model.config.num_classes} classes, the dataset {meta.num_classes}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sem_eval = SemanticEvaluator(meta.class_names, meta.ignore_label) if semantic else None
    pan_eval = PanopticEvaluator(meta) if panoptic else None
    count = len(dataset) if limit is None else min(limit, len(dataset))
    batch_size = max(1, batch_size)
    rank, world, mine = _share(count, batch_size, distributed)
    show = (None if progress is None else bool(progress)) if rank == 0 else False
    bar = tqdm(total=len(mine), desc="eval", disable=(None if show is None else not show), leave=False)
    pending: list = []

    def flush() -> None:
        images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in pending]).to(device)
        preds = predict(model, images, semantic, panoptic, short_side, max_size)
        for sample, pred in zip(pending, preds):
            if on_prediction is not None:
                on_prediction(sample, pred)
            _score(sample, pred, sem_eval, pan_eval)
        bar.update(len(pending))
        pending.clear()

    try:
        for i in mine:
            sample = dataset[i]
            if pending and (i % batch_size == 0 or pending[0].image.shape != sample.image.shape):
                flush()
            pending.append(sample)
        if pending:
            flush()
    finally:
        bar.close()
        model.train(was_training)
    if world > 1:
        if sem_eval is not None:
            sem_eval.all_reduce()
        if pan_eval is not None:
            pan_eval.all_reduce()
    return EvalResult(
        count,
        sem_eval.compute() if sem_eval is not None else None,
        pan_eval.compute() if pan_eval is not None else None,
    )


def _share(count: int, batch_size: int, distributed: bool | None) -> tuple[int, int, list[int]]:
    """This process's rank, the world size and the images it evaluates (whole chunks of
    ``batch_size``, dealt round-robin to the ranks)."""
    ctx = current_context()
    if distributed is None:
        distributed = ctx.distributed
    rank, world = (ctx.rank, ctx.world_size) if distributed else (0, 1)
    return rank, world, [i for i in range(count) if (i // batch_size) % world == rank]


def _score(
    sample: Sample,
    pred: Prediction,
    sem_eval: SemanticEvaluator | None,
    pan_eval: PanopticEvaluator | None,
) -> None:
    """Add one image's prediction to the running metrics."""
    if sem_eval is not None and sample.sem_seg is not None:
        sem_eval.update(pred.semantic, sample.sem_seg)
    if pan_eval is not None:
        result = pred.panoptic
        pan_eval.update(
            result.id_map.cpu().numpy(),
            [(s.id, s.category_id) for s in result.segments],
            sample.pan_seg,
            sample.segments,
        )


def _checked_task(
    task: str, model_task: str, checkpoint: str | os.PathLike[str], data: str | os.PathLike[str]
) -> str:
    """``task``, once it is known and the model (of ``model_task``) can be evaluated on it."""
    if task not in TASKS:
        raise DatasetError(f"{data}: unknown task {task!r} (semantic or panoptic)")
    if task == "panoptic" and model_task != "panoptic":
        raise ConfigError(
            f"{checkpoint}: --task panoptic needs a panoptic model, this one is {model_task} "
            "(it predicts no segments, so PQ cannot be measured); use --task semantic"
        )
    return task


def dataset_kind(config: PEMConfig) -> str:
    """``cityscapes`` or ``ade20k`` for a model config (from its preset name, else its class count)."""
    prefix = config.name.split("-")[0]
    if prefix in ("cityscapes", "ade20k"):
        return prefix
    return "ade20k" if config.num_classes == 150 else "cityscapes"


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    split: str = "val",
    task: str | None = None,
    batch_size: int = 4,
    limit: int | None = None,
    short_side: int | None = None,
    max_size: int = 4096,
    device: str | None = None,
    save_predictions: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    exist_ok: bool = False,
    overwrite: bool = False,
) -> EvalResult:
    """Evaluate one of our checkpoints on ``split`` of the dataset folder ``data``.

    ``task`` defaults to the model's: a panoptic model is evaluated on the panoptic annotations
    (mIoU and PQ), a semantic one on the semantic labels (mIoU). ``short_side`` defaults to the
    preset's test size (native size for Cityscapes). ``save_predictions`` writes the
    predictions in the official Cityscapes evaluators' formats (Cityscapes data only), by the
    rules of :mod:`contract.output` (``exist_ok``: a folder holding other files; ``overwrite``:
    replace files there pem-deploy did not write; never into the checkpoint or the data).
    """
    from pem.checkpoint import load_checkpoint
    from pem.data import open_dataset

    ctx = init_distributed(device)  # under torchrun: each rank evaluates a shard
    if ctx.distributed and save_predictions is not None:
        raise ConfigError(
            f"{save_predictions}: saving predictions needs a single process (not {ctx.world_size} ranks)"
        )
    dev = rank_device(device, ctx)
    model = load_checkpoint(checkpoint, map_location=dev)
    kind = dataset_kind(model.config)
    if short_side is None and model.config.name in preset_names():
        test = preset_eval_size(model.config.name)  # ADE20K: 512 / 640; Cityscapes: native
        short_side, max_size = test.short_side, test.max_size
    task = _checked_task(task or model.config.task, model.config.task, checkpoint, data)
    dataset = open_dataset(data, kind, split, task)  # type: ignore[arg-type]
    if save_predictions is not None and kind != "cityscapes":
        raise DatasetError(f"{save_predictions}: saving predictions is supported for Cityscapes data only")
    with contextlib.ExitStack() as stack:
        callback = None
        writer = None
        if save_predictions is not None:
            from pem.checkpoint import checkpoint_files
            from pem.data.cityscapes import CityscapesPredictionWriter
            from pem.data.common import staged_directory

            # Staged and moved in at the end: all predictions or none (contract/output.py).
            staging = stack.enter_context(
                staged_directory(
                    Path(save_predictions),
                    exist_ok=exist_ok,
                    overwrite=overwrite,
                    inputs=[*checkpoint_files(checkpoint), data],
                )
            )
            writer = CityscapesPredictionWriter(staging, split)

            def callback(sample: Sample, pred: Prediction) -> None:
                if pred.semantic is not None:
                    writer.add_semantic(sample.name, pred.semantic)
                if pred.panoptic is not None:
                    segments = [(s.id, s.category_id) for s in pred.panoptic.segments]
                    writer.add_panoptic(sample.name, pred.panoptic.id_map.cpu().numpy(), segments)

        result = evaluate(
            model,
            dataset,
            batch_size=batch_size,
            short_side=short_side,
            max_size=max_size,
            limit=limit,
            progress=progress,
            on_prediction=callback,
        )
        if writer is not None:
            writer.close()
    return result
