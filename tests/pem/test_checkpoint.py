import pickle
import re

import numpy as np
import pytest
import torch

from contract.errors import OutputExistsError
from pem.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_official_checkpoint,
    read_official_state_dict,
    save_checkpoint,
)
from pem.config import get_preset
from pem.model import PEM
from tests.helpers.official_layout import official_keys


def _official_arrays(backbone: str, num_classes: int = 19, legacy: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for key, shape in official_keys(backbone, num_classes, legacy_names=legacy).items():
        alias = re.match(r"backbone\.x\d+\.0\.(\d+)\.(.*)", key)
        if alias:  # STDC stage aliases share storage with backbone.features.* in official files
            arrays[key] = arrays[f"backbone.features.{alias[1]}.{alias[2]}"]
        elif key.endswith("num_batches_tracked"):
            arrays[key] = np.array(7, dtype=np.int64)
        else:
            arrays[key] = rng.standard_normal(shape).astype(np.float32)
    return arrays


def _write_pkl(path, arrays) -> None:
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "third_party", "matching_heuristics": True}, f)


@pytest.mark.parametrize(
    ("backbone", "preset"),
    [
        ("r50", "cityscapes-semantic-r50"),
        ("stdc1", "cityscapes-panoptic-stdc1"),
        ("stdc2", "cityscapes-semantic-stdc2"),
    ],
)
def test_official_pkl_loads_with_no_missing_or_unexpected_keys(tmp_path, backbone, preset):
    arrays = _official_arrays(backbone)
    path = tmp_path / "model_final.pkl"
    _write_pkl(path, arrays)
    model = PEM(get_preset(preset))
    report = load_official_checkpoint(model, path)
    assert report.ok, report.summary()
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.ignored == ["criterion.empty_weight"]
    own = model.state_dict()
    for key in (
        "sem_seg_head.predictor.transformer_cross_attention_layers.3.alpha",
        "backbone.features.2.conv_list.1.conv.weight",
        "backbone.res4.5.conv2.weight",
    ):
        if key in arrays:
            assert torch.equal(own[key], torch.from_numpy(arrays[key]))


def test_official_pth_and_legacy_names(tmp_path):
    arrays = _official_arrays("stdc1", legacy=True)
    path = tmp_path / "model_0004999.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in arrays.items()}, "iteration": 4999}, path)
    model = PEM(get_preset("cityscapes-semantic-stdc1"))
    report = load_official_checkpoint(model, path)
    assert report.ok, report.summary()
    key = "sem_seg_head.predictor.transformer_cross_attention_layers.0.feature_proj.out.weight"
    legacy = key.replace("feature_proj", "to_query")
    assert torch.equal(model.state_dict()[key], torch.from_numpy(arrays[legacy]))


def test_frozen_bn_checkpoint_without_step_counters_loads(tmp_path):
    arrays = {k: v for k, v in _official_arrays("r50", 150).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "ade.pkl"
    _write_pkl(path, arrays)
    report = load_official_checkpoint(PEM(get_preset("ade20k-semantic-r50")), path)
    assert report.ok, report.summary()


def test_mismatch_is_reported_by_name(tmp_path):
    arrays = _official_arrays("stdc1", num_classes=150)
    path = tmp_path / "ade.pkl"
    _write_pkl(path, arrays)
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(PEM(get_preset("cityscapes-semantic-stdc1")), path)
    assert "sem_seg_head.predictor.class_embed.weight" in str(err.value)
    assert str(path) in str(err.value)
    report = load_official_checkpoint(PEM(get_preset("cityscapes-semantic-stdc1")), path, strict=False)
    assert [m[0] for m in report.mismatched] == [
        "sem_seg_head.predictor.class_embed.weight",
        "sem_seg_head.predictor.class_embed.bias",
    ]


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": _Exploit()}}, f)
    with pytest.raises(CheckpointError, match="refusing to load global builtins.print"):
        read_official_state_dict(path)
    assert "pwned" not in capsys.readouterr().out


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_official_state_dict(tmp_path / "absent.pkl")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="junk.pkl"):
        read_official_state_dict(junk)
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match="expected a dict"):
        read_official_state_dict(listed)


@pytest.mark.parametrize("preset", ["cityscapes-semantic-tiny", "cityscapes-panoptic-stdc1"])
def test_round_trip_of_our_format(tmp_path, preset):
    cfg = get_preset(preset)
    model = PEM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_checkpoint(model, cfg, tmp_path / "ckpt")
    assert path.name == "ckpt.safetensors" and (tmp_path / "ckpt.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(OutputExistsError, match="ckpt.safetensors: exists; pass --overwrite"):
        save_checkpoint(model, cfg, tmp_path / "ckpt")  # never replaced silently
    loaded = load_checkpoint(path)
    assert loaded.config == cfg
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a["pred_masks"], b["pred_masks"])


def test_our_format_errors(tmp_path):
    cfg = get_preset("cityscapes-semantic-tiny")
    path = save_checkpoint(PEM(cfg), cfg, tmp_path / "m.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match=r"m\.json: config file .* missing"):
        load_checkpoint(path)
    path = save_checkpoint(PEM(cfg), cfg, tmp_path / "m.safetensors", overwrite=True)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)
    other = get_preset("cityscapes-panoptic-tiny").replace(num_classes=7, class_names=(), thing_ids=())
    path = save_checkpoint(PEM(cfg), other, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="class_embed"):
        load_checkpoint(path)


def test_backbone_weights_from_torchvision_d2_and_stdc_files(tmp_path):
    from pem.checkpoint import load_backbone_weights
    from tests.helpers.official_layout import resnet50_keys, stdc_keys

    rng = np.random.default_rng(1)
    d2 = {
        k.removeprefix("backbone."): rng.standard_normal(s).astype(np.float32)
        for k, s in resnet50_keys().items()
    }
    # torchvision names from the detectron2 ones
    tv = {}
    for key, value in d2.items():
        if key.endswith("num_batches_tracked"):
            continue
        name = key.replace("stem.conv1.norm", "bn1").replace("stem.conv1", "conv1")
        for stage in range(2, 6):
            name = name.replace(f"res{stage}.", f"layer{stage - 1}.")
        for i in (1, 2, 3):
            name = name.replace(f"conv{i}.norm", f"bn{i}")
        name = name.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
        tv[name] = torch.from_numpy(value)
    tv["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(tv, tmp_path / "resnet50.pth")
    model = PEM(get_preset("cityscapes-semantic-r50"))
    report = load_backbone_weights(model, tmp_path / "resnet50.pth")
    assert report.ok, report.summary()
    got = model.state_dict()["backbone.res3.1.conv2.norm.running_var"]
    assert torch.equal(got, torch.from_numpy(d2["res3.1.conv2.norm.running_var"]))

    with open(tmp_path / "R-50.pkl", "wb") as f:
        pickle.dump({"model": d2, "__author__": "torchvision"}, f)
    model = PEM(get_preset("cityscapes-semantic-r50"))
    assert load_backbone_weights(model, tmp_path / "R-50.pkl").ok
    assert torch.equal(
        model.state_dict()["backbone.res5.2.conv3.weight"], torch.from_numpy(d2["res5.2.conv3.weight"])
    )

    stdc = {
        k.removeprefix("backbone."): rng.standard_normal(s).astype(np.float32)
        for k, s in stdc_keys((2, 2, 2)).items()
        if k.startswith("backbone.features.")
    }
    stdc["fc.weight"] = np.zeros((1000, 1024), np.float32)
    with open(tmp_path / "STDC1.pkl", "wb") as f:
        pickle.dump({"model": stdc, "matching_heuristics": True}, f)
    model = PEM(get_preset("cityscapes-semantic-stdc1"))
    assert load_backbone_weights(model, tmp_path / "STDC1.pkl").ok
    got = model.state_dict()
    assert torch.equal(
        got["backbone.x8.0.3.conv_list.2.conv.weight"],
        torch.from_numpy(stdc["features.3.conv_list.2.conv.weight"]),
    )

    with pytest.raises(CheckpointError, match="STDC1.pkl: not backbone weights"):
        load_backbone_weights(PEM(get_preset("cityscapes-semantic-r50")), tmp_path / "STDC1.pkl")
