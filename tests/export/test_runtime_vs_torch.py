"""The torch-free runtime on the exported, trained small model agrees with PyTorch inference."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from export.pipeline import ExportOptions, export_artifact
from export.source import load_source
from pem.checkpoint import load_checkpoint
from runtime import Segmenter

NUM_IMAGES = 6


@pytest.fixture(scope="module")
def trained():
    from pem.zoo import default_dataset_path, ensure_default_checkpoint

    checkpoint = ensure_default_checkpoint()
    images = sorted((Path(default_dataset_path()) / "leftImg8bit" / "val").rglob("*.png"))[:NUM_IMAGES]
    assert len(images) == NUM_IMAGES
    return checkpoint, [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in images]


def _export(checkpoint, out_dir, head):
    source = load_source(checkpoint=checkpoint)
    return export_artifact(source, ExportOptions(out_dir=out_dir, head=head)).onnx_path


def _torch_input(bgr):
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).float()[None]


def test_semantic_label_maps_match_pytorch(trained, tmp_path_factory):
    checkpoint, images = trained
    model = load_checkpoint(checkpoint)
    seg = Segmenter.open(_export(checkpoint, tmp_path_factory.mktemp("sem"), "semantic"))
    agree = total = 0
    for bgr in images:
        expected = model.predict_semantic(_torch_input(bgr)).argmax(1)[0].numpy()
        got = seg.predict(bgr).labels
        assert got.shape == expected.shape
        agree += int((got == expected).sum())
        total += expected.size
    assert agree / total >= 0.999, f"label agreement {agree / total:.5f}"
    assert len(np.unique(expected)) > 3  # a trained model, not a constant map


def test_panoptic_segments_match_pytorch(trained, tmp_path_factory):
    checkpoint, images = trained
    model = load_checkpoint(checkpoint)
    seg = Segmenter.open(_export(checkpoint, tmp_path_factory.mktemp("pan"), "panoptic"))
    matched_segments = 0
    for bgr in images:
        expected = model.predict_panoptic(_torch_input(bgr))[0]
        got = seg.predict(bgr)
        want = [(s.id, s.category_id, s.isthing, s.area) for s in expected.segments]
        have = [(s.id, s.category_id, s.isthing, s.area) for s in got.segments]
        assert have == want
        agreement = float((got.panoptic == expected.id_map.numpy()).mean())
        assert agreement >= 0.999, agreement
        matched_segments += len(have)
    assert matched_segments >= NUM_IMAGES * 3  # real segments were compared, not empty lists
