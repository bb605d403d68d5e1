"""Datasets: synthetic generator, Cityscapes / ADE20K readers, augmentation, mappers, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label, name2label
from typer.testing import CliRunner

from contract.errors import OutputExistsError
from contract.output import MANIFEST_NAME
from pem.config import get_preset
from pem.data import DatasetError, open_dataset
from pem.data.ade20k import ADE20KDataset
from pem.data.cityscapes import (
    CityscapesDataset,
    cityscapes_meta,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from pem.data.common import Sample, SegmentInfo, id_to_rgb, rgb_to_id, write_png
from pem.data.mapper import collate, panoptic_target, semantic_target
from pem.data.synthetic import SyntheticConfig, make_synthetic, render_scene, scene_rng
from pem.data.transforms import (
    AugmentConfig,
    augment,
    hflip,
    photometric_distort,
    random_crop,
    resize_shortest_edge,
)

SIZE = (64, 128)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "set"
    return make_synthetic(root, SyntheticConfig(train=4, val=3, size=SIZE, seed=3, crowd_prob=0.5))


def _tree_digest(root: Path) -> dict[str, str]:
    """Every file's digest, but the record of what pem-deploy wrote (it holds modification times)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


# ---------------------------------------------------------------------------------------------
# Synthetic set


def test_render_is_deterministic_and_varied():
    a = render_scene(scene_rng(0, "train", 5), SIZE)
    b = render_scene(scene_rng(0, "train", 5), SIZE)
    c = render_scene(scene_rng(0, "train", 6), SIZE)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    image, labels, instances = a
    assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
    assert labels.shape == SIZE and instances.shape == SIZE and instances.dtype == np.uint16


def test_scenes_have_stuff_things_and_occlusion():
    names = {"road", "sidewalk", "building", "vegetation", "terrain", "sky", "person", "car"}
    seen: set[str] = set()
    cars_per_image = []
    for i in range(12):
        _, labels, instances = render_scene(scene_rng(0, "train", i), (128, 256))
        seen |= {id2label[int(v)].name for v in np.unique(labels)}
        cars_per_image.append(
            len({int(v) for v in np.unique(instances) if v // 1000 == name2label["car"].id})
        )
        # Cityscapes instance convention: instance id // 1000 is the label id, else the label id itself.
        inst = instances.astype(np.int64)
        np.testing.assert_array_equal(np.where(inst >= 1000, inst // 1000, inst), labels)
    assert names <= seen
    assert max(cars_per_image) >= 3  # several instances of a class per image


def test_make_synthetic_layout_and_reproducibility(synth, tmp_path):
    train_img = sorted((synth / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    assert len(train_img) == 4
    name = train_img[0].name.replace("_leftImg8bit.png", "")
    gt = train_img[0].parent.parent.parent.parent / "gtFine" / "train" / train_img[0].parent.name
    for suffix in ("labelIds", "instanceIds", "color"):
        assert (gt / f"{name}_gtFine_{suffix}.png").is_file()
    pan = json.loads((synth / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    assert len(pan["annotations"]) == 3
    assert {c["name"] for c in pan["categories"]} == set(cityscapes_meta().class_names)
    assert (synth / "gtFine" / "cityscapes_panoptic_val" / pan["annotations"][0]["file_name"]).is_file()
    # Same seed -> byte-identical files; different seed -> different images.
    again = make_synthetic(
        tmp_path / "again", SyntheticConfig(train=4, val=3, size=SIZE, seed=3, crowd_prob=0.5)
    )
    assert _tree_digest(again) == _tree_digest(synth)


def test_make_synthetic_refuses_non_empty_output_and_leaves_nothing(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="busy"):
        make_synthetic(out, SyntheticConfig(train=1, val=1, size=SIZE))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    with pytest.raises(DatasetError, match="too small"):
        SyntheticConfig(size=(16, 16))


# ---------------------------------------------------------------------------------------------
# Cityscapes reader


def test_label_mapping_comes_from_cityscapesscripts():
    meta = cityscapes_meta()
    preset = get_preset("cityscapes-panoptic-tiny")
    assert meta.class_names == preset.class_names
    assert meta.thing_ids == preset.thing_ids
    ids = np.array([[0, 7, 8, 24, 26, 33, 4, 29]], dtype=np.uint8)
    train = label_ids_to_train_ids(ids)
    np.testing.assert_array_equal(train, [[255, 0, 1, 11, 13, 18, 255, 255]])
    np.testing.assert_array_equal(train_ids_to_label_ids(train), [[0, 7, 8, 24, 26, 33, 0, 0]])


def test_cityscapes_semantic_and_panoptic_agree(synth):
    sem = CityscapesDataset(synth, "val", "semantic")
    pan = CityscapesDataset(synth, "val", "panoptic")
    assert len(sem) == len(pan) == 3 and sem.names == pan.names
    crowd = 0
    for i in range(len(sem)):
        a, b = sem[i], pan[i]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.sem_seg, b.sem_seg)
        assert set(np.unique(a.sem_seg)) <= set(range(19)) | {255}
        for seg in b.segments:
            assert seg.isthing == (seg.category_id in cityscapes_meta().thing_ids)
            assert seg.iscrowd <= seg.isthing
            crowd += seg.iscrowd
        things = [s for s in b.segments if s.isthing and not s.iscrowd]
        assert len({s.id for s in things}) == len(things)
    assert isinstance(open_dataset(synth, "cityscapes", "train", "panoptic"), CityscapesDataset)


def _copy_set(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_cityscapes_errors_name_the_file(synth, tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        CityscapesDataset(tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError, match="leftImg8bit/test"):
        CityscapesDataset(synth, "test")
    bad = _copy_set(synth, tmp_path / "bad")
    label = next((bad / "gtFine" / "val").glob("*/*_labelIds.png"))
    arr = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    arr[0, 0] = 200  # not a Cityscapes label id
    cv2.imwrite(str(label), arr)
    ds = CityscapesDataset(bad, "val", "semantic")
    with pytest.raises(DatasetError, match=rf"{label.name}: unknown Cityscapes label ids \[200\]"):
        ds[ds.names.index(label.name.replace("_gtFine_labelIds.png", ""))]
    label.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=f"{label.name}: not a readable"):
        ds[ds.names.index(label.name.replace("_gtFine_labelIds.png", ""))]
    label.unlink()
    with pytest.raises(DatasetError, match=f"{label.name}: annotation file not found"):
        CityscapesDataset(bad, "val", "semantic")


def test_cityscapes_panoptic_errors_name_the_file(synth, tmp_path):
    bad = _copy_set(synth, tmp_path / "bad")
    js = bad / "gtFine" / "cityscapes_panoptic_val.json"
    data = json.loads(js.read_text())
    del data["annotations"][0]["segments_info"][0]["category_id"]
    js.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="cityscapes_panoptic_val.json: malformed"):
        CityscapesDataset(bad, "val", "panoptic")
    js.write_text("{not json")
    with pytest.raises(DatasetError, match="cityscapes_panoptic_val.json: not valid JSON"):
        CityscapesDataset(bad, "val", "panoptic")
    data = json.loads((synth / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    dropped = data["annotations"][0]["segments_info"].pop()
    js.write_text(json.dumps(data))
    ds = CityscapesDataset(bad, "val", "panoptic")
    png = data["annotations"][0]["file_name"]
    with pytest.raises(DatasetError, match=rf"{png}: segment ids \[{dropped['id']}\]"):
        ds[ds.names.index(data["annotations"][0]["image_id"])]


# ---------------------------------------------------------------------------------------------
# ADE20K reader (a tiny fake in the prepared layout)


def _fake_ade(root: Path) -> Path:
    base = root / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    categories = [
        {"id": i, "name": f"c{i}", "isthing": int(i % 10 == 0), "color": [i, i, i]} for i in range(150)
    ]
    for split, folder in (("train", "training"), ("val", "validation")):
        annotations = []
        for k in range(2):
            name = f"ADE_{split}_{k:08d}"
            image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
            (base / "images" / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(base / "images" / folder / f"{name}.jpg"), image)
            sem = np.full((40, 60), 255, np.uint8)
            sem[:20] = 3
            sem[20:, :30] = 10  # a thing class
            sem[20:, 30:] = 10
            write_png(base / "annotations_detectron2" / folder / f"{name}.png", sem)
            pan = np.zeros((40, 60), np.int32)
            pan[:20] = 5
            pan[20:, :30] = 1000
            pan[20:, 30:] = 1001
            write_png(base / f"ade20k_panoptic_{split}" / f"{name}.png", id_to_rgb(pan))
            segs = [
                {"id": 5, "category_id": 3, "iscrowd": 0, "area": 1200},
                {"id": 1000, "category_id": 10, "iscrowd": 0, "area": 600},
                {"id": 1001, "category_id": 10, "iscrowd": 0, "area": 600},
            ]
            annotations.append({"image_id": name, "file_name": f"{name}.png", "segments_info": segs})
        (base / f"ade20k_panoptic_{split}.json").write_text(
            json.dumps({"annotations": annotations, "categories": categories, "images": []})
        )
    return root


def test_ade20k_semantic_and_panoptic(tmp_path):
    root = _fake_ade(tmp_path)
    sem = ADE20KDataset(root, "val", "semantic")
    pan = ADE20KDataset(root / "ADEChallengeData2016", "val", "panoptic")
    assert len(sem) == len(pan) == 2
    assert sem.meta.num_classes == 150 and sem.meta.thing_ids[:2] == (0, 10)
    s, p = sem[0], pan[0]
    assert s.image.shape == (40, 60, 3)
    np.testing.assert_array_equal(s.sem_seg, p.sem_seg)
    assert [(g.category_id, g.isthing) for g in p.segments] == [(3, False), (10, True), (10, True)]
    target = panoptic_target(p)
    assert target.labels.tolist() == [3, 10, 10]
    bad = root / "ADEChallengeData2016" / "annotations_detectron2" / "validation" / f"{sem.names[0]}.png"
    write_png(bad, np.full((40, 60), 151, np.uint8))
    with pytest.raises(DatasetError, match=rf"{bad.name}: class ids \[151\] out of range"):
        sem[0]
    with pytest.raises(DatasetError, match="unknown ADE20K split"):
        ADE20KDataset(root, "test")


# ---------------------------------------------------------------------------------------------
# Augmentation and mapping


def _coord_sample(h: int = 40, w: int = 60) -> Sample:
    """A sample whose pixel values encode their coordinates, to check geometry consistency."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([yy * 4 % 256, xx * 4 % 256, np.zeros_like(yy)], -1).astype(np.uint8)
    sem = (xx // 15).astype(np.uint8)
    pan = (yy // 20 * 10 + xx // 30 + 1).astype(np.int32)
    segments = [SegmentInfo(int(i), int(i) % 3, isthing=True) for i in np.unique(pan)]
    return Sample("coords", image, sem, pan, segments)


def test_resize_crop_flip_keep_image_and_labels_aligned():
    s = _coord_sample()
    r = resize_shortest_edge(s, 20, 1000)
    assert r.image.shape[:2] == (20, 30) and r.sem_seg.shape == (20, 30) and r.pan_seg.dtype == np.int32
    assert resize_shortest_edge(s, 80, 100).image.shape[:2] == (67, 100)  # long side capped
    c = random_crop(s, (16, 24), np.random.default_rng(0))
    top, left = int(c.image[0, 0, 0]) // 4, int(c.image[0, 0, 1]) // 4
    np.testing.assert_array_equal(c.sem_seg, s.sem_seg[top : top + 16, left : left + 24])
    np.testing.assert_array_equal(c.pan_seg, s.pan_seg[top : top + 16, left : left + 24])
    assert random_crop(s, (100, 100), np.random.default_rng(0)).image.shape[:2] == (40, 60)
    f = hflip(s)
    np.testing.assert_array_equal(f.sem_seg[:, 0], s.sem_seg[:, -1])
    np.testing.assert_array_equal(f.image[:, 0], s.image[:, -1])


def test_category_area_constraint_rejects_single_class_crops():
    s = _coord_sample()
    s.sem_seg[:, :45] = 0  # one class dominates most of the image
    hits = []
    for seed in range(20):
        c = random_crop(s, (20, 20), np.random.default_rng(seed), single_category_max_area=0.9)
        counts = np.bincount(c.sem_seg.ravel())
        hits.append(counts.max() < 0.9 * counts.sum())
    assert sum(hits) >= 18  # retried until a mixed crop (up to 10 tries)


def test_scale_choices_match_the_detectron2_recipe():
    cfg = AugmentConfig()  # Cityscapes: int(0.1 * x * 1024) for x in 5..20
    assert cfg.short_sides() == [int(0.1 * x * 1024) for x in range(5, 21)]


def test_augment_is_deterministic_and_photometric_keeps_format():
    s = _coord_sample()
    cfg = AugmentConfig(short_side=40, scale_range=(0.5, 1.5), scale_step=0.25, crop_size=(32, 32))
    a = augment(s, cfg, np.random.default_rng(7))
    b = augment(s, cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.pan_seg, b.pan_seg)
    assert a.image.shape[0] <= 32 and a.image.shape[1] <= 32
    img = photometric_distort(s.image, np.random.default_rng(1))
    assert img.shape == s.image.shape and img.dtype == np.uint8
    assert any(
        not np.array_equal(photometric_distort(s.image, np.random.default_rng(k)), s.image) for k in range(4)
    )


def test_semantic_and_panoptic_targets():
    sem = np.array([[0, 0, 5], [255, 5, 5]], np.uint8)
    t = semantic_target(sem)
    assert t.labels.tolist() == [0, 5]
    assert t.masks.sum().item() == 5 and not (t.masks[0] & t.masks[1]).any()
    pan = np.array([[1, 1, 2], [0, 3, 3]], np.int32)
    segs = [
        SegmentInfo(1, 0, False),
        SegmentInfo(2, 13, True, iscrowd=True),
        SegmentInfo(3, 13, True),
        SegmentInfo(9, 11, True),
    ]
    t = panoptic_target(Sample("p", np.zeros((2, 3, 3), np.uint8), None, pan, segs))
    assert t.labels.tolist() == [0, 13]  # crowd and empty segments dropped
    assert t.masks[1].tolist() == [[False, False, False], [False, True, True]]


def test_collate_pads_with_pixel_mean_and_zero_masks():
    a = (np.full((40, 50, 3), 7, np.uint8), semantic_target(np.zeros((40, 50), np.uint8)))
    b = (np.full((30, 70, 3), 9, np.uint8), semantic_target(np.ones((30, 70), np.uint8)))
    batch = collate([a, b], pixel_mean=(1.0, 2.0, 3.0), min_size=(64, 64))
    assert batch.images.shape == (2, 3, 64, 96)
    assert batch.images[0, :, 0, 0].tolist() == [7, 7, 7] and batch.images[0, :, 50, 60].tolist() == [1, 2, 3]
    assert batch.targets[1].masks.shape == (1, 64, 96) and int(batch.targets[1].masks.sum()) == 30 * 70
    assert batch.images.dtype == torch.float32


def test_panoptic_png_colour_encoding_roundtrip():
    ids = np.array([[0, 1, 26001], [24000, 70000, 16777215]], np.int64)
    np.testing.assert_array_equal(rgb_to_id(id_to_rgb(ids)), ids)


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_make_synthetic(tmp_path):
    from cli import app

    runner = CliRunner()
    out = tmp_path / "syn"
    result = runner.invoke(
        app, ["make-synthetic", str(out), "--train", "2", "--val", "1", "--size", "64x128", "--seed", "4"]
    )
    assert result.exit_code == 0, result.output
    assert len(CityscapesDataset(out, "train", "panoptic")) == 2
    result = runner.invoke(
        app, ["make-synthetic", str(out), "--train", "1", "--val", "1", "--size", "64x128"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {out}: already exists and is not an empty directory"
    ]
    result = runner.invoke(app, ["make-synthetic", str(tmp_path / "x"), "--size", "64by128"])
    assert result.exit_code == 2 and "error: --size must be HxW" in result.output
