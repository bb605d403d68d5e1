"""Tests for the modulated deformable convolution custom op (pem::modulated_deform_conv2d)."""

from __future__ import annotations

import importlib.util
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from pem.ops import (
    ModulatedDeformConv2d,
    conv_output_size,
    deform_conv2d_native,
    deform_conv_backend,
    modulated_deform_conv2d,
)


def reference_deform_conv2d(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """Slow literal DCNv2: explicit loops over batch, offset group, output pixel and kernel tap."""
    b_sz, c_sz, h_sz, w_sz = x.shape
    _, _, kh, kw = weight.shape
    oh = conv_output_size(h_sz, kh, stride[0], padding[0], dilation[0])
    ow = conv_output_size(w_sz, kw, stride[1], padding[1], dilation[1])
    groups = offset.shape[1] // (2 * kh * kw)
    cpg = c_sz // groups
    cols = torch.zeros(b_sz, c_sz, kh, kw, oh, ow, dtype=x.dtype)

    def pixel(b: int, g: int, yy: int, xx: int) -> Tensor:
        chans = slice(g * cpg, (g + 1) * cpg)
        if 0 <= yy < h_sz and 0 <= xx < w_sz:
            return x[b, chans, yy, xx]
        return torch.zeros(cpg, dtype=x.dtype)

    for b in range(b_sz):
        for g in range(groups):
            for oy in range(oh):
                for ox in range(ow):
                    for i in range(kh):
                        for j in range(kw):
                            k = i * kw + j
                            dy = float(offset[b, g * 2 * kh * kw + 2 * k, oy, ox])
                            dx = float(offset[b, g * 2 * kh * kw + 2 * k + 1, oy, ox])
                            m = float(mask[b, g * kh * kw + k, oy, ox])
                            y = oy * stride[0] - padding[0] + i * dilation[0] + dy
                            xp = ox * stride[1] - padding[1] + j * dilation[1] + dx
                            val = torch.zeros(cpg, dtype=x.dtype)
                            if -1 < y < h_sz and -1 < xp < w_sz:
                                y0 = math.floor(y)
                                x0 = math.floor(xp)
                                ly, lx = y - y0, xp - x0
                                val = (
                                    (1 - ly) * (1 - lx) * pixel(b, g, y0, x0)
                                    + (1 - ly) * lx * pixel(b, g, y0, x0 + 1)
                                    + ly * (1 - lx) * pixel(b, g, y0 + 1, x0)
                                    + ly * lx * pixel(b, g, y0 + 1, x0 + 1)
                                )
                            cols[b, g * cpg : (g + 1) * cpg, i, j, oy, ox] = m * val
    out = torch.einsum("ocij,bcijyx->boyx", weight, cols)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class Case(NamedTuple):
    """One deformable-convolution problem: input ``(b, c, h, w)``, ``o`` outputs, kernel ``k``."""

    b: int
    c: int
    h: int
    w: int
    o: int
    k: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    with_bias: bool


def _make_inputs(seed: int, case: Case) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Seeded float64 ``(x, offset, mask, weight, bias)`` for ``case``; offsets in [-2.5, 2.5]."""
    gen = torch.Generator().manual_seed(seed)
    oh = conv_output_size(case.h, case.k[0], case.stride[0], case.padding[0], case.dilation[0])
    ow = conv_output_size(case.w, case.k[1], case.stride[1], case.padding[1], case.dilation[1])
    taps = case.k[0] * case.k[1]
    f64 = torch.float64
    x = torch.randn(case.b, case.c, case.h, case.w, generator=gen, dtype=f64)
    offset = (torch.rand(case.b, 2 * case.groups * taps, oh, ow, generator=gen, dtype=f64) * 2 - 1) * 2.5
    mask = torch.rand(case.b, case.groups * taps, oh, ow, generator=gen, dtype=f64)
    weight = torch.randn(case.o, case.c, *case.k, generator=gen, dtype=f64)
    bias = torch.randn(case.o, generator=gen, dtype=f64) if case.with_bias else None
    return x, offset, mask, weight, bias


CASES = [
    Case(2, 4, 5, 6, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, False),
    Case(1, 4, 7, 6, 3, (3, 3), (2, 2), (1, 1), (1, 1), 2, True),
    Case(2, 2, 6, 7, 2, (3, 3), (1, 1), (0, 0), (2, 2), 1, True),
    Case(1, 6, 6, 5, 2, (2, 3), (2, 1), (0, 1), (1, 2), 3, False),
]


@pytest.mark.parametrize("case", CASES)
def test_matches_reference(case: Case) -> None:
    x, offset, mask, weight, bias = _make_inputs(1, case)
    stride, padding, dilation = case.stride, case.padding, case.dilation
    # A few exact integer offsets and positions far outside the image.
    offset[:, 0] = torch.round(offset[:, 0])
    offset[:, 1, 0, 0] = -7.25
    offset[:, 2, -1, -1] = 9.5
    expected = reference_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    got = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    for per_tap in (True, False):
        native = deform_conv2d_native(
            x, offset, mask, weight, bias, stride, padding, dilation, per_tap=per_tap
        )
        torch.testing.assert_close(native, expected, atol=1e-10, rtol=1e-10)


def test_boundary_positions() -> None:
    """Samples exactly at -1, H and in (-1, 0) / (H-1, H) follow the zero-outside bilinear rule."""
    x, offset, mask, weight, _ = _make_inputs(
        3, Case(1, 2, 4, 5, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
    )
    values = torch.tensor([-1.0, -0.5, -1.5, 0.25, 3.0, 3.5, 4.0, 4.75, -3.0, 10.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(4)
    idx = torch.randint(0, values.numel(), offset.shape, generator=gen)
    # Absolute positions drawn from `values`: offset = target - base position.
    oh, ow = offset.shape[2:]
    base_y = torch.arange(oh, dtype=torch.float64).view(oh, 1) - 1
    base_x = torch.arange(ow, dtype=torch.float64).view(1, ow) - 1
    for kk in range(9):
        i, j = divmod(kk, 3)
        offset[0, 2 * kk] = values[idx[0, 2 * kk]] - (base_y + i)
        offset[0, 2 * kk + 1] = values[idx[0, 2 * kk + 1]] - (base_x + j)
    expected = reference_deform_conv2d(x, offset, mask, weight, None, (1, 1), (1, 1), (1, 1))
    got = modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "with_bias"),
    [(1, 1, 1, False), (2, 0, 1, True), (1, 2, 2, True), ((2, 1), (1, 0), (1, 2), False)],
)
def test_zero_offset_equals_conv2d(
    stride: object, padding: object, dilation: object, with_bias: bool
) -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, 9, 8, generator=gen)
    weight = torch.randn(4, 5, 3, 3, generator=gen)
    bias = torch.randn(4, generator=gen) if with_bias else None
    expected = F.conv2d(x, weight, bias, stride, padding, dilation)
    oh, ow = expected.shape[2:]
    offset = torch.zeros(2, 18, oh, ow)
    mask = torch.ones(2, 9, oh, ow)
    got = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _fractional_offsets(
    shape: tuple[int, ...], gen: torch.Generator, scale: int = 3, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Offsets whose fractional part stays in [0.15, 0.85]: never on a grid line (bilinear kinks)."""
    whole = torch.randint(-scale, scale + 1, shape, generator=gen).to(dtype)
    frac = 0.15 + 0.7 * torch.rand(shape, generator=gen, dtype=dtype)
    return whole + frac


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "with_bias"),
    [((1, 1), (1, 1), (1, 1), 1, True), ((2, 2), (0, 0), (2, 1), 2, False)],
)
def test_gradcheck(
    stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int, with_bias: bool
) -> None:
    gen = torch.Generator().manual_seed(6)
    b, c, h, w, o = 1, 2, 4, 5, 2
    oh = conv_output_size(h, 3, stride[0], padding[0], dilation[0])
    ow = conv_output_size(w, 3, stride[1], padding[1], dilation[1])
    x = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    offset = _fractional_offsets((b, 2 * groups * 9, oh, ow), gen)
    mask = torch.rand(b, groups * 9, oh, ow, generator=gen, dtype=torch.float64)
    weight = torch.randn(o, c, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(o, generator=gen, dtype=torch.float64) if with_bias else None
    tensors = [t.requires_grad_() for t in (x, offset, mask, weight, bias) if t is not None]

    def fn(*args: Tensor) -> Tensor:
        xb, ob, mb, wb = args[:4]
        bb = args[4] if with_bias else None
        return torch.ops.pem.modulated_deform_conv2d(
            xb, ob, mb, wb, bb, list(stride), list(padding), list(dilation)
        )

    assert torch.autograd.gradcheck(fn, tuple(tensors), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_grad_matches_native_autograd_and_partial_requires_grad() -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 6, 6, generator=gen, dtype=torch.float64)
    offset = _fractional_offsets((2, 18, 6, 6), gen)
    mask = torch.rand(2, 9, 6, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)

    leaves = [t.clone().requires_grad_() for t in (x, offset, mask, weight)]
    deform_conv2d_native(*leaves, None, 1, 1, 1).backward(grad_out)
    expected = [t.grad for t in leaves]

    leaves = [t.clone().requires_grad_() for t in (x, offset, mask, weight)]
    modulated_deform_conv2d(*leaves, None, 1, 1, 1).backward(grad_out)
    for t, e in zip(leaves, expected, strict=True):
        torch.testing.assert_close(t.grad, e)

    # Only the offset requires grad.
    off = offset.clone().requires_grad_()
    (g,) = torch.autograd.grad(modulated_deform_conv2d(x, off, mask, weight, None, 1, 1, 1), off, grad_out)
    torch.testing.assert_close(g, expected[1])


def test_flop_counter() -> None:
    b, c, h, w, o = 2, 8, 10, 12, 6
    x = torch.randn(b, c, h, w)
    weight = torch.randn(o, c, 3, 3)
    oh, ow = conv_output_size(h, 3, 2, 1, 1), conv_output_size(w, 3, 2, 1, 1)
    offset = torch.randn(b, 18, oh, ow)
    mask = torch.rand(b, 9, oh, ow)
    with FlopCounterMode(display=False) as counter:
        modulated_deform_conv2d(x, offset, mask, weight, None, 2, 1, 1)
    expected = 2 * b * o * oh * ow * c * 9
    assert counter.get_total_flops() == expected
    per_op = counter.get_flop_counts()["Global"]
    assert per_op[torch.ops.pem.modulated_deform_conv2d] == expected


def test_module() -> None:
    torch.manual_seed(8)
    layer = ModulatedDeformConv2d(16, 32)
    assert layer.bias is None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    assert layer.weight.shape == (32, 16, 3, 3)
    expected_std = math.sqrt(2.0 / (32 * 9))  # kaiming normal, fan_out, relu
    assert abs(layer.weight.std().item() - expected_std) / expected_std < 0.1

    x = torch.randn(2, 16, 8, 10)
    offset = torch.randn(2, 18, 8, 10)
    mask = torch.rand(2, 9, 8, 10)
    y = layer(x, offset, mask)
    assert y.shape == (2, 32, 8, 10)
    torch.testing.assert_close(y, deform_conv2d_native(x, offset, mask, layer.weight, None, 1, 1, 1))

    layer_b = ModulatedDeformConv2d(4, 6, kernel_size=(3, 3), stride=2, padding=1, bias=True)
    assert layer_b.bias is not None and layer_b.bias.shape == (6,)
    y = layer_b(torch.randn(1, 4, 9, 9), torch.randn(1, 18, 5, 5), torch.rand(1, 9, 5, 5))
    assert y.shape == (1, 6, 5, 5)
    y.sum().backward()
    assert layer_b.weight.grad is not None and layer_b.bias.grad is not None


@pytest.mark.parametrize(
    ("offset_shape", "mask_shape", "weight_shape", "bias_shape", "match"),
    [
        ((1, 17, 6, 6), (1, 9, 6, 6), (3, 4, 3, 3), None, "multiple of"),
        ((1, 18, 5, 6), (1, 9, 6, 6), (3, 4, 3, 3), None, "offset shape"),
        ((1, 18, 6, 6), (1, 18, 6, 6), (3, 4, 3, 3), None, "mask shape"),
        ((1, 18, 6, 6), (1, 9, 6, 6), (3, 2, 3, 3), None, "input channels"),
        ((1, 18, 6, 6), (1, 9, 6, 6), (3, 4, 3, 3), (4,), "bias shape"),
        ((1, 54, 6, 6), (1, 27, 6, 6), (3, 4, 3, 3), None, "divisible"),
        ((1, 18, 6), (1, 9, 6, 6), (3, 4, 3, 3), None, "4-D"),
    ],
)
def test_bad_shapes_raise(
    offset_shape: tuple[int, ...],
    mask_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    bias_shape: tuple[int, ...] | None,
    match: str,
) -> None:
    x = torch.randn(1, 4, 6, 6)
    bias = torch.randn(*bias_shape) if bias_shape is not None else None
    with pytest.raises(ValueError, match=match):
        modulated_deform_conv2d(
            x, torch.randn(*offset_shape), torch.rand(*mask_shape), torch.randn(*weight_shape), bias, 1, 1
        )


def test_bad_params_raise() -> None:
    x, offset, mask = torch.randn(1, 4, 6, 6), torch.randn(1, 18, 6, 6), torch.rand(1, 9, 6, 6)
    weight = torch.randn(3, 4, 3, 3)
    with pytest.raises(ValueError, match="stride"):
        modulated_deform_conv2d(x, offset, mask, weight, None, 0, 1)
    with pytest.raises(ValueError, match="pair"):
        modulated_deform_conv2d(x, offset, mask, weight, None, (1, 1, 1), 1)
    with pytest.raises(ValueError, match="dtype"):
        modulated_deform_conv2d(x, offset.double(), mask, weight, None, 1, 1)


def test_backend_query() -> None:
    backend = deform_conv_backend()
    assert backend in {"native", "torchvision"}
    tv_spec = importlib.util.find_spec("torchvision")
    if tv_spec is None:
        assert backend == "native"


class _TinyDeform(nn.Module):
    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.offset = nn.Conv2d(channels, 27, 3, padding=1)
        self.dcn = ModulatedDeformConv2d(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        dy, dx, m = torch.chunk(self.offset(x), 3, dim=1)
        return self.dcn(x, torch.cat([dy, dx], dim=1), torch.sigmoid(m))


def _dynamic_hw() -> tuple[dict[int, torch.export.Dim], ...]:
    return ({0: torch.export.Dim("b"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")},)


class _NativeDeform(_TinyDeform):
    def forward(self, x: Tensor) -> Tensor:
        dy, dx, m = torch.chunk(self.offset(x), 3, dim=1)
        offset = torch.cat([dy, dx], dim=1)
        return deform_conv2d_native(
            x, offset, torch.sigmoid(m), self.dcn.weight, None, 1, 1, 1, per_tap=False
        )


@pytest.mark.parametrize(
    ("model_cls", "keeps_custom_op", "seed"),
    [(_TinyDeform, True, 9), (_NativeDeform, False, 10)],
    ids=["custom-op", "native-decomposes"],
)
def test_torch_export(model_cls: type[_TinyDeform], keeps_custom_op: bool, seed: int) -> None:
    """The op survives torch.export as one node; the native code traces into plain ops (dynamic B, H, W)."""
    torch.manual_seed(seed)
    model = model_cls().eval()
    x = torch.randn(2, 4, 8, 8)
    ep = torch.export.export(model, (x,), dynamic_shapes=_dynamic_hw())
    targets = {str(node.target) for node in ep.graph.nodes if node.op == "call_function"}
    assert any("pem.modulated_deform_conv2d" in t for t in targets) == keeps_custom_op, targets
    assert keeps_custom_op or not any("pem." in t for t in targets), targets
    torch.testing.assert_close(ep.module()(x), model(x))
    x2 = torch.randn(1, 4, 10, 6) * 3
    torch.testing.assert_close(ep.module()(x2), model(x2))


def test_onnx_export_native_dynamic_shapes(tmp_path: object) -> None:
    """The decomposed graph goes through the dynamo ONNX exporter and runs in onnxruntime."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    import warnings
    from pathlib import Path

    torch.manual_seed(11)
    model = _NativeDeform().eval()
    path = Path(str(tmp_path)) / "dcn_native.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (torch.randn(2, 4, 8, 8),),
            dynamo=True,
            opset_version=19,
            dynamic_shapes=_dynamic_hw(),
            verbose=False,
        )
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 4, 10, 6) * 3
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), model(x), atol=1e-4, rtol=1e-4)


def test_large_input_uses_tap_loop_consistently() -> None:
    """Above the size threshold the eager op loops over taps; results match the vectorised path."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(1, 64, 80, 96, generator=gen)
    offset = torch.randn(1, 18, 80, 96, generator=gen) * 2
    mask = torch.rand(1, 9, 80, 96, generator=gen)
    weight = torch.randn(8, 64, 3, 3, generator=gen) * 0.05
    got = modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1)
    expected = deform_conv2d_native(x, offset, mask, weight, None, 1, 1, 1, per_tap=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
