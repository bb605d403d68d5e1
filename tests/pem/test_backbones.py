"""Backbones: shapes, official state-dict key names, shared STDC registrations, weight loaders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pem.backbones import (
    ResNet,
    STDCNet,
    build_backbone,
    load_stdc_pretrained,
    load_torchvision_resnet50,
    resnet50,
    stdc1,
    stdc2,
)
from pem.config import TINY_BACKBONE, BackboneConfig
from tests.helpers.official_layout import bn_keys, resnet50_keys

R50 = BackboneConfig(name="resnet50")
STDC1 = BackboneConfig(name="stdc", stdc_layers=(2, 2, 2))
STDC2 = BackboneConfig(name="stdc", stdc_layers=(4, 5, 3))
TINY = BackboneConfig(name="stdc", stdc_layers=(1, 1, 1), stdc_base=16)
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
R50_DEPTHS = (3, 4, 6, 3)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------ expected key sets from the rules


def random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.randint(0, 100, shape)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape) + 0.5
        else:
            out[key] = torch.randn(shape) * 0.1
    return out


def stdc_stage_ranges(layers: tuple[int, int, int]) -> dict[str, range]:
    a, b, _ = layers
    n = 2 + sum(layers)
    return {
        "x2": range(0, 1),
        "x4": range(1, 2),
        "x8": range(2, 2 + a),
        "x16": range(2 + a, 2 + a + b),
        "x32": range(2 + a + b, n),
    }


def stdc_feature_keys(layers: tuple[int, int, int], block_num: int = 4) -> list[str]:
    """``features.*`` keys of the official STDCNet (no conv_last)."""
    keys: list[str] = []
    for i in range(2 + sum(layers)):
        if i < 2:
            keys += [f"features.{i}.conv.weight"] + [f"features.{i}.bn.{k}" for k in BN_KEYS]
            continue
        for c in range(block_num):
            keys += [f"features.{i}.conv_list.{c}.conv.weight"]
            keys += [f"features.{i}.conv_list.{c}.bn.{k}" for k in BN_KEYS]
        first_blocks = {2, 2 + layers[0], 2 + layers[0] + layers[1]}
        if i in first_blocks:
            keys += [f"features.{i}.avd_layer.0.weight"] + [f"features.{i}.avd_layer.1.{k}" for k in BN_KEYS]
    return keys


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("cfg", [R50, STDC1, STDC2, TINY], ids=["r50", "stdc1", "stdc2", "tiny"])
def test_output_shapes_channels_strides(cfg: BackboneConfig) -> None:
    model = build_backbone(cfg).eval()
    assert model.out_channels == cfg.out_channels
    assert model.out_strides == (4, 8, 16, 32)
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        out = model(x)
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for (name, feat), c, s in zip(out.items(), cfg.out_channels, (4, 8, 16, 32), strict=True):
        assert feat.shape == (2, c, 64 // s, 128 // s), name
        assert torch.isfinite(feat).all()


def test_tiny_preset_backbone_matches() -> None:
    assert TINY_BACKBONE == TINY
    assert build_backbone(TINY_BACKBONE).out_channels == (16, 64, 128, 256)


def test_build_backbone_types_and_unknown_name() -> None:
    assert isinstance(build_backbone(STDC2), STDCNet)
    assert build_backbone(STDC2).layers == (4, 5, 3)
    with pytest.raises(ValueError, match="backbone.name: must be one of"):
        build_backbone(BackboneConfig(name="vit"))  # type: ignore[arg-type]


def test_stdc_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        STDCNet(layers=(2, 2))
    with pytest.raises(ValueError):
        STDCNet(block_num=1)


# ------------------------------------------------------------------ ResNet-50


def test_resnet_state_dict_equals_detectron2_layout() -> None:
    model = resnet50()
    expected = resnet50_keys(prefix="")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert list(got) == list(expected)  # detectron2 registers shortcut before conv1..3
    assert len(got) == 318
    # examples quoted in the official-code notes
    assert got["res2.0.conv1.weight"] == (64, 64, 1, 1)
    assert got["res2.0.conv2.weight"] == (64, 64, 3, 3)
    assert got["res2.0.conv3.weight"] == (256, 64, 1, 1)
    assert got["res2.0.shortcut.weight"] == (256, 64, 1, 1)
    assert got["res5.0.shortcut.weight"] == (2048, 1024, 1, 1)
    assert not any(k.endswith(".bias") and ".norm." not in k for k in got)  # convs are bias-free


def test_resnet_stride_is_in_3x3_conv() -> None:
    model = resnet50()
    for stage, stride in (("res2", 1), ("res3", 2), ("res4", 2), ("res5", 2)):
        block = getattr(model, stage)[0]
        assert block.conv1.stride == (1, 1)
        assert block.conv2.stride == (stride, stride)
        assert block.shortcut.stride == (stride, stride)
        assert getattr(model, stage)[1].shortcut is None


def test_resnet_init() -> None:
    model = resnet50()
    w = model.res4[0].conv2.weight  # fan_out = 256 * 9
    assert abs(w.std().item() - (2.0 / (256 * 9)) ** 0.5) < 0.1 * (2.0 / (256 * 9)) ** 0.5
    norm = model.res4[0].conv2.norm
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def _bn_eval(x: Tensor, sd: dict[str, Tensor], p: str) -> Tensor:
    return F.batch_norm(
        x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False
    )


def torchvision_reference_forward(sd: dict[str, Tensor], x: Tensor) -> list[Tensor]:
    """Functional ResNet-50 (eval mode) written directly against torchvision key names."""
    x = F.relu(_bn_eval(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    feats = []
    for i, depth in enumerate(R50_DEPTHS):
        for j in range(depth):
            p = f"layer{i + 1}.{j}"
            s = 2 if (i > 0 and j == 0) else 1
            out = F.relu(_bn_eval(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
            out = F.relu(
                _bn_eval(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=s, padding=1), sd, f"{p}.bn2")
            )
            out = _bn_eval(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            if j == 0:
                x = _bn_eval(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), sd, f"{p}.downsample.1")
            x = F.relu(out + x)
        feats.append(x)
    return feats


def test_load_torchvision_resnet50_maps_every_key() -> None:
    sd = random_state(resnet50_keys(prefix="", torchvision=True))
    model = resnet50().eval()
    missing, unexpected = load_torchvision_resnet50(model, sd)
    assert missing == []
    assert unexpected == []
    own = model.state_dict()
    assert torch.equal(own["stem.conv1.weight"], sd["conv1.weight"])
    assert torch.equal(own["stem.conv1.norm.running_var"], sd["bn1.running_var"])
    assert torch.equal(own["res3.2.conv2.weight"], sd["layer2.2.conv2.weight"])
    assert torch.equal(own["res4.5.conv3.norm.bias"], sd["layer3.5.bn3.bias"])
    assert torch.equal(own["res5.0.shortcut.weight"], sd["layer4.0.downsample.0.weight"])
    assert torch.equal(own["res2.0.shortcut.norm.running_mean"], sd["layer1.0.downsample.1.running_mean"])
    assert torch.equal(own["res2.1.conv1.norm.num_batches_tracked"], sd["layer1.1.bn1.num_batches_tracked"])
    # Same numerics as a functional ResNet-50 written against the torchvision names.
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = list(model(x).values())
        ref = torchvision_reference_forward(sd, x)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_load_torchvision_resnet50_reports_missing_and_unexpected() -> None:
    sd = random_state(resnet50_keys(prefix="", torchvision=True))
    del sd["layer2.1.conv2.weight"]
    for key in [k for k in sd if k.endswith("num_batches_tracked")]:
        del sd[key]  # old torchvision files have no counters; not reported as missing
    sd["layer1.0.se.weight"] = torch.zeros(1)
    sd["extra"] = torch.zeros(1)
    missing, unexpected = load_torchvision_resnet50(resnet50(), sd)
    assert missing == ["res3.1.conv2.weight"]
    assert sorted(unexpected) == ["extra", "layer1.0.se.weight"]


def test_load_torchvision_resnet50_shape_mismatch_names_key() -> None:
    sd = random_state(resnet50_keys(prefix="", torchvision=True))
    sd["layer3.0.bn2.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"layer3\.0\.bn2\.weight"):
        load_torchvision_resnet50(resnet50(), sd)


# ------------------------------------------------------------------ STDC


@pytest.mark.parametrize(
    ("layers", "n_keys"),
    [((2, 2, 2), 348), ((4, 5, 3), 636), ((1, 1, 1), 204)],
    ids=["stdc1", "stdc2", "tiny"],
)
def test_stdc_key_set_matches_official_tree(layers: tuple[int, int, int], n_keys: int) -> None:
    model = STDCNet(base=16 if layers == (1, 1, 1) else 64, layers=layers)
    keys = list(model.state_dict())
    features = stdc_feature_keys(layers)
    aliases = []
    for stage, idx in stdc_stage_ranges(layers).items():
        for i in idx:
            prefix = f"features.{i}."
            aliases += [f"{stage}.0.{i}." + k.removeprefix(prefix) for k in features if k.startswith(prefix)]
    assert keys == features + aliases
    assert len(keys) == n_keys == 2 * len(features)


def test_stdc_stage_aliases_match_official_ranges() -> None:
    # STDC1: x8 = features 2-3, x16 = 4-5, x32 = 6-7; STDC2: x8 = 2-5, x16 = 6-10, x32 = 11-13.
    for model, ranges in (
        (stdc1(), {"x2": [0], "x4": [1], "x8": [2, 3], "x16": [4, 5], "x32": [6, 7]}),
        (stdc2(), {"x2": [0], "x4": [1], "x8": [2, 3, 4, 5], "x16": [6, 7, 8, 9, 10], "x32": [11, 12, 13]}),
    ):
        for stage, idx in ranges.items():
            inner = getattr(model, stage)[0]
            assert [int(k) for k in inner._modules] == idx
            assert all(getattr(inner, str(i)) is model.features[i] for i in idx)


def test_full_model_key_counts_consistent_with_official_totals() -> None:
    # Official totals (whole PEM): 624 (R50, SyncBN), 654 (STDC1), 942 (STDC2). The heads are
    # identical in key count, so the backbone difference must explain the totals.
    head_keys = 624 - len(resnet50().state_dict())
    assert len(stdc1().state_dict()) + head_keys == 654
    assert len(stdc2().state_dict()) + head_keys == 942


def test_stdc1_example_shapes_from_notes() -> None:
    sd = stdc1().state_dict()
    assert sd["features.0.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["features.1.conv.weight"].shape == (64, 32, 3, 3)
    assert sd["features.2.conv_list.0.conv.weight"].shape == (128, 64, 1, 1)
    assert sd["features.2.conv_list.1.conv.weight"].shape == (64, 128, 3, 3)
    assert sd["features.2.conv_list.2.conv.weight"].shape == (32, 64, 3, 3)
    assert sd["features.2.conv_list.3.conv.weight"].shape == (32, 32, 3, 3)
    assert sd["features.2.avd_layer.0.weight"].shape == (128, 1, 3, 3)
    assert "features.3.avd_layer.0.weight" not in sd
    assert sd["features.7.conv_list.3.conv.weight"].shape == (128, 128, 3, 3)


def test_stdc_dual_registration_shares_storage() -> None:
    model = STDCNet(base=16, layers=(1, 1, 1))
    sd = model.state_dict()
    assert (
        sd["x8.0.2.conv_list.1.conv.weight"].data_ptr() == sd["features.2.conv_list.1.conv.weight"].data_ptr()
    )
    assert (
        sd["x32.0.4.avd_layer.1.running_var"].data_ptr()
        == sd["features.4.avd_layer.1.running_var"].data_ptr()
    )
    # parameters() de-duplicates
    assert len(list(model.parameters())) == len(
        [k for k in sd if k.startswith("features.") and "running" not in k and "num_batches" not in k]
    )
    # loading an alias key writes the shared tensor
    half = torch.full_like(sd["features.1.conv.weight"], 0.5)
    result = model.load_state_dict({"x4.0.1.conv.weight": half}, strict=False)
    assert "features.1.conv.weight" in result.missing_keys
    assert torch.all(model.features[1].conv.weight == 0.5)
    assert getattr(model.x4[0], "1").conv.weight is model.features[1].conv.weight


def test_stdc_state_dict_round_trip() -> None:
    src = STDCNet(base=16, layers=(1, 1, 1))
    src.train()
    src(torch.randn(2, 3, 64, 64))  # move BN statistics away from their init
    dst = STDCNet(base=16, layers=(1, 1, 1))
    assert str(dst.load_state_dict(src.state_dict())) == "<All keys matched successfully>"
    src.eval()
    dst.eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        for a, b in zip(src(x).values(), dst(x).values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def _stdc_imagenet_state(model: STDCNet, with_aliases: bool) -> dict[str, Tensor]:
    """Synthetic STDC-Seg classifier state dict for ``model`` (random values, classifier keys)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not with_aliases:
        shapes = {k: s for k, s in shapes.items() if k.startswith("features.")}
    sd = random_state(shapes)
    if with_aliases:  # both copies carry the same values, as in a real checkpoint
        for k in sd:
            if not k.startswith("features."):
                _stage, _, i, rest = k.split(".", 3)
                sd[k] = sd[f"features.{i}.{rest}"]
    c = model.out_channels[3]
    sd.update(random_state({"conv_last.conv.weight": (c, c, 1, 1), **bn_keys("conv_last.bn", c)}))
    sd.update(random_state({"fc.weight": (c, c), **bn_keys("bn", c), "linear.weight": (1000, c)}))
    return sd


@pytest.mark.parametrize("with_aliases", [True, False])
def test_load_stdc_pretrained(with_aliases: bool) -> None:
    model = stdc1()
    sd = _stdc_imagenet_state(model, with_aliases)
    missing, unexpected = load_stdc_pretrained(model, sd)
    assert missing == []
    assert unexpected == []
    own = model.state_dict()
    for key in (
        "features.3.conv_list.2.conv.weight",
        "features.6.avd_layer.1.running_var",
        "features.0.bn.bias",
    ):
        assert torch.equal(own[key], sd[key])
    assert torch.equal(own["x32.0.6.avd_layer.1.running_var"], sd["features.6.avd_layer.1.running_var"])


def test_load_stdc_pretrained_wrapped_prefixed_and_reports() -> None:
    model = STDCNet(base=16, layers=(1, 1, 1))
    sd = _stdc_imagenet_state(model, with_aliases=False)
    sd = {f"module.{k}": v.numpy() for k, v in sd.items()}  # DataParallel prefix, numpy values
    del sd["module.features.3.conv_list.1.conv.weight"]
    sd["module.features.9.conv.weight"] = torch.zeros(1).numpy()
    missing, unexpected = load_stdc_pretrained(model, {"state_dict": sd})
    assert missing == ["features.3.conv_list.1.conv.weight"]
    assert unexpected == ["module.features.9.conv.weight"]
    torch.testing.assert_close(
        model.features[2].conv_list[3].conv.weight,
        torch.from_numpy(sd["module.features.2.conv_list.3.conv.weight"]),
    )


def test_load_stdc_pretrained_shape_mismatch_names_key() -> None:
    model = stdc1()
    sd = _stdc_imagenet_state(model, with_aliases=True)
    sd["x16.0.4.conv_list.0.bn.weight"] = torch.ones(7)
    with pytest.raises(ValueError, match=r"x16\.0\.4\.conv_list\.0\.bn\.weight"):
        load_stdc_pretrained(model, sd)


# ------------------------------------------------------------------ parameter counts


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # unique tensors (aliases counted once)


def test_parameter_counts() -> None:
    # Official totals minus pixel decoder and predictor (K = 19); see the official-code notes.
    predictor = 9.847e6
    targets = {
        "r50": (resnet50(), 23_508_032),
        "stdc1": (stdc1(), 16.96e6 - 1.793e6 - predictor),
        "stdc2": (stdc2(), 20.99e6 - 1.793e6 - predictor),
    }
    for name, (model, target) in targets.items():
        n = _n_params(model)
        assert abs(n - target) / target < 0.01, (name, n, target)
    assert _n_params(resnet50()) == 23_508_032  # torchvision ResNet-50 without fc


def test_resnet_class_is_configurable() -> None:
    small = ResNet(depths=(1, 1, 1, 1), stem_channels=16)
    assert small.out_channels == (64, 128, 256, 512)
    out = small(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 512, 2, 2)
