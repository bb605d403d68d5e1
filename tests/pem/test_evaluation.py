"""mIoU and PQ: hand-checked cases, and equality with cityscapesscripts' own evaluators."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as cs_pan
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_sem
from cityscapesscripts.helpers.labels import trainId2label

from pem.data.cityscapes import CityscapesDataset, CityscapesPredictionWriter, cityscapes_meta
from pem.data.common import DatasetMeta, SegmentInfo
from pem.data.synthetic import SyntheticConfig, make_synthetic
from pem.evaluation import PanopticEvaluator, SemanticEvaluator, evaluate_checkpoint

# ---------------------------------------------------------------------------------------------
# Hand-computed cases


def test_semantic_iou_by_hand():
    ev = SemanticEvaluator(["a", "b", "c", "d"])
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 3]])
    ev.update(pred, gt)
    m = ev.compute()
    # a: tp 3, fn 1 -> 3/4; b: tp 2, fp 1, fn 1 -> 2/4; c: fp 1 -> 0; d: only on ignore -> not evaluated.
    assert m.per_class["a"] == pytest.approx(0.75) and m.per_class["b"] == pytest.approx(0.5)
    assert m.per_class["c"] == 0.0 and math.isnan(m.per_class["d"])
    assert m.miou == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert m.pixel_accuracy == pytest.approx(5 / 7)
    with pytest.raises(ValueError, match="differ in size"):
        ev.update(pred[:, :2], gt)


def test_panoptic_quality_by_hand():
    meta = DatasetMeta("toy", ("stuff", "thing"), (1,))
    ev = PanopticEvaluator(meta)
    gt = np.zeros((4, 10), np.int64)
    gt[:, :4] = 1  # stuff, 16 px
    gt[:, 4:7] = 2  # thing A, 12 px
    gt[:2, 7:] = 3  # crowd of things, 6 px; gt[2:, 7:] stays void
    segs = [SegmentInfo(1, 0, False), SegmentInfo(2, 1, True), SegmentInfo(3, 1, True, iscrowd=True)]
    pred = np.zeros((4, 10), np.int64)
    pred[:, :4] = 10  # stuff exact: IoU 1
    pred[:3, 4:7] = 20  # thing A, 9 of 12 px: IoU 0.75
    pred[3, 4:7] = 21  # small thing on A's rest: unmatched -> FP (only 0/3 on void/crowd)
    pred[:, 7:] = 30  # thing over crowd (6 px) + void (6 px): excused
    ev.update(pred, [(10, 0), (20, 1), (21, 1), (30, 1)], gt, segs)
    m = ev.compute()
    assert m.per_class["stuff"] == {"PQ": 1.0, "SQ": 1.0, "RQ": 1.0}
    # thing: tp 1 (IoU .75), fp 1, fn 0 -> RQ 1/1.5, SQ .75, PQ .5
    assert m.per_class["thing"]["PQ"] == pytest.approx(0.5) and m.per_class["thing"]["RQ"] == pytest.approx(
        2 / 3
    )
    assert m.all.pq == pytest.approx(0.75) and m.things.n == 1 and m.stuff.pq == 1.0
    with pytest.raises(ValueError, match="have no class"):
        ev.update(pred, [(10, 0)], gt, segs)


# ---------------------------------------------------------------------------------------------
# Generated cases vs cityscapesscripts


@pytest.fixture(scope="module")
def val_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_synth") / "set"
    return make_synthetic(root, SyntheticConfig(train=0, val=4, size=(128, 256), seed=11, crowd_prob=1.0))


def _perturb_semantic(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pred = np.where(gt == 255, rng.integers(0, 19, gt.shape), gt).astype(np.int64)
    pred = np.roll(pred, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
    h, w = gt.shape
    for _ in range(6):
        y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        pred[y : y + int(rng.integers(4, 30)), x : x + int(rng.integers(4, 60))] = rng.integers(0, 19)
    return pred


def _perturb_panoptic(gt_map: np.ndarray, segments: list[SegmentInfo], rng: np.random.Generator):
    """A prediction derived from the ground truth by exact copies, shifts, erosions, dilations,
    relabelling, drops, merges, predictions on crowd regions and void, and random false positives."""
    pred = np.zeros_like(gt_map)
    cats: dict[int, int] = {}
    things = cityscapes_meta().thing_ids
    kernel = np.ones((5, 5), np.uint8)
    merge_into: dict[int, int] = {}
    for seg in segments:
        mask = (gt_map == seg.id).astype(np.uint8)
        action = rng.choice(["keep", "shift", "erode", "dilate", "relabel", "drop", "merge"])
        new_id = int(rng.integers(1, 2**24))
        category = seg.category_id
        if action == "shift":
            mask = np.roll(mask, int(rng.integers(-6, 7)), axis=1)
        elif action == "erode":
            mask = cv2.erode(mask, kernel)
        elif action == "dilate":
            mask = cv2.dilate(mask, kernel)
        elif action == "relabel":
            pool = things if seg.isthing else [c for c in range(19) if c not in things]
            category = int(rng.choice(pool))
        elif action == "drop":
            continue
        elif action == "merge" and seg.isthing:
            new_id = merge_into.setdefault(category, new_id)
        pred[mask.astype(bool)] = new_id
        cats[new_id] = category
    h, w = gt_map.shape
    for _ in range(4):  # spurious segments, some over void / crowd
        y, x = int(rng.integers(0, h - 10)), int(rng.integers(0, w - 10))
        new_id = int(rng.integers(1, 2**24))
        pred[y : y + int(rng.integers(3, 20)), x : x + int(rng.integers(3, 30))] = new_id
        cats[new_id] = int(rng.choice(things))
    for seg in segments:  # a thing prediction on every crowd region
        if seg.iscrowd:
            new_id = int(rng.integers(1, 2**24))
            pred[gt_map == seg.id] = new_id
            cats[new_id] = seg.category_id
    present = {int(v) for v in np.unique(pred) if v}
    return pred, [(i, c) for i, c in cats.items() if i in present]


def _run_cityscapes_semantic(preds: list[Path], gts: list[Path]) -> dict:
    args = copy.copy(cs_sem.args)
    args.quiet = True
    args.JSONOutput = False
    args.colorized = False
    # iIoU (instance-level scores) is not part of our metrics, and cityscapesscripts 2.3.0 computes it
    # with np.in1d, which NumPy 2.4 removed; the class IoUs and their mean do not depend on it.
    args.evalInstLevelScore = False
    with contextlib.redirect_stdout(io.StringIO()):
        return cs_sem.evaluateImgLists([str(p) for p in preds], [str(g) for g in gts], args)


def _run_cityscapes_panoptic(root: Path, writer: CityscapesPredictionWriter, tmp: Path) -> dict:
    gt_json = root / "gtFine" / "cityscapes_panoptic_val.json"
    with contextlib.redirect_stdout(io.StringIO()):
        return cs_pan.evaluatePanoptic(
            str(gt_json),
            str(gt_json.with_suffix("")),
            str(writer.panoptic_json),
            str(writer.panoptic_dir),
            str(tmp / "pq.json"),
        )


def _assert_semantic_equal(ours, theirs: dict) -> None:
    assert ours.miou == pytest.approx(theirs["averageScoreClasses"], rel=1e-12, abs=1e-15)
    for train_id, name in enumerate(cityscapes_meta().class_names):
        mine, ref = ours.per_class[name], theirs["classScores"][name]
        assert (math.isnan(mine) and math.isnan(ref)) or mine == pytest.approx(ref, rel=1e-12, abs=1e-15), (
            name
        )
        assert trainId2label[train_id].name == name


def _assert_panoptic_equal(ours, theirs: dict) -> None:
    for group, key in ((ours.all, "All"), (ours.things, "Things"), (ours.stuff, "Stuff")):
        ref = theirs[key]
        assert group.n == ref["n"], key
        for metric in ("pq", "sq", "rq"):
            assert getattr(group, metric) == pytest.approx(ref[metric], rel=1e-9, abs=1e-12), (key, metric)
    by_name = {trainId2label[i].name: i for i in range(19)}
    for name, values in ours.per_class.items():
        ref = theirs["per_class"][trainId2label[by_name[name]].id]
        if values is None:
            assert ref == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        else:
            for metric in ("PQ", "SQ", "RQ"):
                assert values[metric] == pytest.approx(ref[metric.lower()], rel=1e-9, abs=1e-12), (
                    name,
                    metric,
                )


def test_metrics_equal_cityscapesscripts_on_generated_cases(val_set, tmp_path):
    sem_ds = CityscapesDataset(val_set, "val", "semantic")
    pan_ds = CityscapesDataset(val_set, "val", "panoptic")
    meta = sem_ds.meta
    rng = np.random.default_rng(2024)
    for trial in range(2):
        writer = CityscapesPredictionWriter(tmp_path / f"pred{trial}", "val")
        sem_eval, pan_eval = SemanticEvaluator(meta.class_names), PanopticEvaluator(meta)
        preds, gts = [], []
        for i in range(len(sem_ds)):
            sample, pan_sample = sem_ds[i], pan_ds[i]
            pred = _perturb_semantic(sample.sem_seg, rng)
            sem_eval.update(pred, sample.sem_seg)
            preds.append(writer.add_semantic(sample.name, pred))
            gts.append(sem_ds._label_path(sample.name))
            pan_map, pan_segs = _perturb_panoptic(pan_sample.pan_seg, pan_sample.segments, rng)
            pan_eval.update(pan_map, pan_segs, pan_sample.pan_seg, pan_sample.segments)
            writer.add_panoptic(sample.name, pan_map, pan_segs)
        writer.close()
        ours_sem, ours_pan = sem_eval.compute(), pan_eval.compute()
        _assert_semantic_equal(ours_sem, _run_cityscapes_semantic(preds, gts))
        theirs = _run_cityscapes_panoptic(val_set, writer, tmp_path)
        _assert_panoptic_equal(ours_pan, theirs)
        # The generated cases exercise every branch: matches, misses, false and excused positives.
        assert 0.1 < ours_pan.all.pq < 0.95 and ours_pan.things.n > 0 and ours_pan.stuff.n > 0
        assert any(s.iscrowd for i in range(len(pan_ds)) for s in pan_ds[i].segments)


def test_model_evaluation_equals_cityscapesscripts(val_set, tmp_path):
    """End to end: a trained model's predictions, written in Cityscapes formats, scored both ways."""
    from pem.zoo import ensure_default_checkpoint

    checkpoint = ensure_default_checkpoint("quick")
    out = tmp_path / "model_preds"
    result = evaluate_checkpoint(checkpoint, val_set, "val", device="cpu", save_predictions=out)
    assert result.images == 4 and result.semantic.miou > 0
    ds = CityscapesDataset(val_set, "val", "semantic")
    preds = [out / "semantic" / f"{n}_pred_labelIds.png" for n in ds.names]
    gts = [ds._label_path(n) for n in ds.names]
    _assert_semantic_equal(result.semantic, _run_cityscapes_semantic(preds, gts))
    writer = CityscapesPredictionWriter(out, "val")
    _assert_panoptic_equal(result.panoptic, _run_cityscapes_panoptic(val_set, writer, tmp_path))
    meta = json.loads(writer.panoptic_json.read_text())
    assert len(meta["annotations"]) == 4
