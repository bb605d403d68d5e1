"""The official PEM state-dict layout (key -> shape), generated from the published key tables and
architecture rules (shared/design/pem-official-code-notes.md, section 7), independently of our
module code, so that loading it checks our names against the official ones."""

from __future__ import annotations

Shape = tuple[int, ...]


def bn_keys(prefix: str, c: int) -> dict[str, Shape]:
    """The five entries of a ``BatchNorm2d`` with ``c`` channels under ``prefix``."""
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def resnet50_keys(prefix: str = "backbone.", torchvision: bool = False) -> dict[str, Shape]:
    """ResNet-50 keys in module order under ``prefix``.

    detectron2 names (``stem.conv1``, ``res2..5``, the shortcut registered before ``conv1..3``) or, with
    ``torchvision``, torchvision names (``conv1``/``bn1``, ``layer1..4``, ``downsample`` after the
    convolutions, plus the ``fc`` classifier).
    """
    stem, stem_norm = ("conv1", "bn1") if torchvision else ("stem.conv1", "stem.conv1.norm")
    keys = {f"{prefix}{stem}.weight": (64, 3, 7, 7), **bn_keys(f"{prefix}{stem_norm}", 64)}
    in_c = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        out_c = width * 4
        for j in range(blocks):
            p = f"{prefix}layer{stage + 1}.{j}" if torchvision else f"{prefix}res{stage + 2}.{j}"
            shapes = ((width, in_c, 1, 1), (width, width, 3, 3), (out_c, width, 1, 1))
            convs = [
                (f"conv{k}", f"bn{k}" if torchvision else f"conv{k}.norm", s) for k, s in enumerate(shapes, 1)
            ]
            if j == 0:
                shortcut = (out_c, in_c, 1, 1)
                if torchvision:
                    convs.append(("downsample.0", "downsample.1", shortcut))
                else:
                    convs.insert(0, ("shortcut", "shortcut.norm", shortcut))
            for conv, norm, shape in convs:
                keys[f"{p}.{conv}.weight"] = shape
                keys.update(bn_keys(f"{p}.{norm}", shape[0]))
            in_c = out_c
    if torchvision:
        keys[f"{prefix}fc.weight"] = (1000, 2048)
        keys[f"{prefix}fc.bias"] = (1000,)
    return keys


def _convx(prefix: str, cin: int, cout: int, k: int) -> dict[str, Shape]:
    return {f"{prefix}.conv.weight": (cout, cin, k, k), **bn_keys(f"{prefix}.bn", cout)}


def stdc_keys(layers: tuple[int, ...], base: int = 64) -> dict[str, Shape]:
    features: list[dict[str, Shape]] = [
        _convx("{p}", 3, base // 2, 3),
        _convx("{p}", base // 2, base, 3),
    ]
    for i, blocks in enumerate(layers):
        for j in range(blocks):
            out_c = base * 2 ** (i + 2)
            in_c = (base if i == 0 else base * 2 ** (i + 1)) if j == 0 else out_c
            block: dict[str, Shape] = {}
            widths = [(in_c, out_c // 2, 1), (out_c // 2, out_c // 4, 3), (out_c // 4, out_c // 8, 3)]
            widths.append((out_c // 8, out_c // 8, 3))
            for k, (ci, co, ks) in enumerate(widths):
                block.update(_convx(f"{{p}}.conv_list.{k}", ci, co, ks))
            if j == 0:
                block["{p}.avd_layer.0.weight"] = (out_c // 2, 1, 3, 3)
                block.update(bn_keys("{p}.avd_layer.1", out_c // 2))
            features.append(block)
    # The official module also registers the stages as x2, x4, x8, x16, x32 (shared tensors).
    bounds = [0, 1, 2]
    for blocks in layers:
        bounds.append(bounds[-1] + blocks)
    groups = {"x2": range(0, 1), "x4": range(1, 2)}
    for name, lo, hi in zip(("x8", "x16", "x32"), bounds[2:], bounds[3:]):
        groups[name] = range(lo, hi)
    keys: dict[str, Shape] = {}
    for idx, block in enumerate(features):
        keys.update({k.format(p=f"backbone.features.{idx}"): v for k, v in block.items()})
    for name, idxs in groups.items():
        for idx in idxs:
            keys.update({k.format(p=f"backbone.{name}.0.{idx}"): v for k, v in features[idx].items()})
    return keys


def pixel_decoder_keys(
    in_channels: tuple[int, ...], conv_dim: int = 128, mask_dim: int = 256
) -> dict[str, Shape]:
    p = "sem_seg_head.pixel_decoder"
    keys: dict[str, Shape] = {}
    for i, c in enumerate(in_channels):
        keys[f"{p}.in_projections.{i}.conv.weight"] = (conv_dim, c, 1, 1)
        keys.update(bn_keys(f"{p}.in_projections.{i}.bn", conv_dim))
    keys[f"{p}.conv_avg.conv.weight"] = (conv_dim, in_channels[-1], 1, 1)
    keys.update(bn_keys(f"{p}.conv_avg.bn", conv_dim))
    for i in range(4):
        keys[f"{p}.csm.{i}.mlp.0.mlp.0.weight"] = (conv_dim // 2, conv_dim, 1, 1)
        keys.update(bn_keys(f"{p}.csm.{i}.mlp.0.mlp.1", conv_dim // 2))
        keys[f"{p}.csm.{i}.mlp.0.mlp.3.weight"] = (conv_dim, conv_dim // 2, 1, 1)
    for j in range(3):
        keys[f"{p}.dcn.{j}.dcn_offset.weight"] = (27, conv_dim, 3, 3)
        keys[f"{p}.dcn.{j}.dcn_offset.bias"] = (27,)
        keys[f"{p}.dcn.{j}.dcn.weight"] = (conv_dim, conv_dim, 3, 3)
        keys.update(bn_keys(f"{p}.dcn.{j}.dcn_bn", conv_dim))
        keys[f"{p}.dcn.{j}.up_sample.weight"] = (conv_dim, conv_dim, 4, 4)
        keys.update(bn_keys(f"{p}.dcn.{j}.up_bn", conv_dim))
    keys[f"{p}.out.conv.weight"] = (mask_dim, conv_dim, 1, 1)
    keys.update(bn_keys(f"{p}.out.bn", mask_dim))
    return keys


def predictor_keys(
    num_classes: int,
    layers: int = 6,
    dim: int = 256,
    ffn: int = 2048,
    queries: int = 100,
    in_dim: int = 128,
    legacy_names: bool = False,
) -> dict[str, Shape]:
    p = "sem_seg_head.predictor"
    feature_proj, query_proj = ("to_query", "to_key") if legacy_names else ("feature_proj", "query_proj")
    keys: dict[str, Shape] = {}
    for i in range(layers):
        sa = f"{p}.transformer_self_attention_layers.{i}"
        keys[f"{sa}.self_attn.in_proj_weight"] = (3 * dim, dim)
        keys[f"{sa}.self_attn.in_proj_bias"] = (3 * dim,)
        keys[f"{sa}.self_attn.out_proj.weight"] = (dim, dim)
        keys[f"{sa}.self_attn.out_proj.bias"] = (dim,)
        keys[f"{sa}.norm.weight"] = (dim,)
        keys[f"{sa}.norm.bias"] = (dim,)
        ca = f"{p}.transformer_cross_attention_layers.{i}"
        keys[f"{ca}.alpha"] = (1, 1, dim)
        keys[f"{ca}.{feature_proj}.to_query_3x3.weight"] = (dim, 1, 3, 3)
        keys[f"{ca}.{feature_proj}.to_query_3x3.bias"] = (dim,)
        keys.update(bn_keys(f"{ca}.{feature_proj}.bn", dim))
        keys[f"{ca}.{feature_proj}.out.weight"] = (dim, dim)
        keys[f"{ca}.{feature_proj}.out.bias"] = (dim,)
        keys[f"{ca}.{query_proj}.0.weight"] = (dim,)
        keys[f"{ca}.{query_proj}.0.bias"] = (dim,)
        keys[f"{ca}.{query_proj}.1.weight"] = (dim, dim)
        keys[f"{ca}.{query_proj}.1.bias"] = (dim,)
        for name in ("proj", "final"):
            keys[f"{ca}.{name}.weight"] = (dim, dim)
            keys[f"{ca}.{name}.bias"] = (dim,)
        ff = f"{p}.transformer_ffn_layers.{i}"
        keys[f"{ff}.linear1.weight"] = (ffn, dim)
        keys[f"{ff}.linear1.bias"] = (ffn,)
        keys[f"{ff}.linear2.weight"] = (dim, ffn)
        keys[f"{ff}.linear2.bias"] = (dim,)
        keys[f"{ff}.norm.weight"] = (dim,)
        keys[f"{ff}.norm.bias"] = (dim,)
    keys[f"{p}.decoder_norm.weight"] = (dim,)
    keys[f"{p}.decoder_norm.bias"] = (dim,)
    keys[f"{p}.query_feat.weight"] = (queries, dim)
    keys[f"{p}.query_embed.weight"] = (queries, dim)
    keys[f"{p}.level_embed.weight"] = (3, dim)
    for i in range(3):
        keys[f"{p}.input_proj.{i}.weight"] = (dim, in_dim, 1, 1)
        keys[f"{p}.input_proj.{i}.bias"] = (dim,)
    keys[f"{p}.class_embed.weight"] = (num_classes + 1, dim)
    keys[f"{p}.class_embed.bias"] = (num_classes + 1,)
    for i in range(3):
        keys[f"{p}.mask_embed.layers.{i}.weight"] = (dim, dim)
        keys[f"{p}.mask_embed.layers.{i}.bias"] = (dim,)
    return keys


def official_keys(backbone: str, num_classes: int = 19, legacy_names: bool = False) -> dict[str, Shape]:
    """Full official state dict layout (with ``criterion.empty_weight``) for r50 / stdc1 / stdc2."""
    if backbone == "r50":
        keys, in_channels = resnet50_keys(), (256, 512, 1024, 2048)
    else:
        keys = stdc_keys((2, 2, 2) if backbone == "stdc1" else (4, 5, 3))
        in_channels = (64, 256, 512, 1024)
    keys.update(pixel_decoder_keys(in_channels))
    keys.update(predictor_keys(num_classes, legacy_names=legacy_names))
    keys["criterion.empty_weight"] = (num_classes + 1,)
    return keys
