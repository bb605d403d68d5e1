"""Modulated deformable convolution (DCNv2) as a ``torch.library`` custom op.

Semantics are those of ``torchvision.ops.deform_conv2d`` / ONNX ``DeformConv`` / detectron2
``ModulatedDeformConv`` (groups = 1, any number of offset groups):

* ``input``  ``(B, C, H, W)``, ``weight`` ``(O, C, kH, kW)``, optional ``bias`` ``(O,)``.
* ``offset`` ``(B, 2*G*kH*kW, oH, oW)``: for offset group ``g`` and kernel tap ``k = i*kW + j`` the
  channels ``g*2*kH*kW + 2*k`` and ``... + 2*k + 1`` hold ``(dy, dx)``. The ``C`` input channels are
  split into ``G`` contiguous groups of ``C // G`` channels.
* ``mask``   ``(B, G*kH*kW, oH, oW)``: channel ``g*kH*kW + k`` multiplies the sampled value.
* The sample for output ``(oy, ox)`` and tap ``(i, j)`` is taken at
  ``y = oy*stride_h - pad_h + i*dil_h + dy``, ``x = ox*stride_w - pad_w + j*dil_w + dx`` with bilinear
  interpolation in which every neighbour pixel outside the image contributes zero (positions in
  ``(-1, H) x (-1, W)`` get partial contributions, anything further out samples 0).

Public entry points:

* :func:`modulated_deform_conv2d` -- validated functional wrapper around the custom op
  ``torch.ops.pem.modulated_deform_conv2d`` (autograd, fake/meta kernel and FLOP formula registered).
* :class:`ModulatedDeformConv2d` -- ``nn.Module`` holding the weight (and optional bias).
* :func:`deform_conv2d_native` -- the pure-PyTorch implementation (gather + matmul). It uses no
  data-dependent Python control flow, so ``torch.export`` / the dynamo ONNX exporter can trace it into
  plain ops (a "decomposed" graph without a ``DeformConv`` node).
* :func:`deform_conv_backend` -- which kernel the eager op uses (``"torchvision"`` or ``"native"``).
* :func:`conv_output_size` -- the output side of a convolution (shared by the checks and the fake kernel).

The eager op dispatches to ``torchvision.ops.deform_conv2d`` only when ``torchvision.ops`` imports and
its kernel runs and agrees with the native code on a tiny probe (checked lazily, once per device type).
Set the environment variable ``PEM_DEFORM_CONV_BACKEND=native`` to never use torchvision.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import flop_registry, register_flop_formula

IntOrPair = int | Sequence[int]

_BACKEND_ENV = "PEM_DEFORM_CONV_BACKEND"

# Upper bound for sample positions (far beyond any image side; exactly representable in float32).
_POS_LIMIT = float(2**22)

# The eager op samples all taps at once below this many im2col elements, tap by tap above it.
_PER_TAP_THRESHOLD = 2**22


def _pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """Normalise an int or a 2-sequence of ints to a ``(h, w)`` tuple (raises ``ValueError``)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (items[0], items[1])


class _ConvGeometry(NamedTuple):
    """Stride, padding and dilation of one convolution, each as ``(h, w)`` (the op's ``int[]`` arguments)."""

    stride: Sequence[int]
    padding: Sequence[int]
    dilation: Sequence[int]

    @classmethod
    def of(cls, stride: IntOrPair, padding: IntOrPair, dilation: IntOrPair) -> _ConvGeometry:
        """Normalise user-facing ints or pairs (raises ``ValueError`` naming the bad argument)."""
        return cls(_pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation"))

    def as_tuples(self) -> _ConvGeometry:
        """The same geometry with every field a tuple (torchvision and the error messages want tuples)."""
        return _ConvGeometry(tuple(self.stride), tuple(self.padding), tuple(self.dilation))


# ---------------------------------------------------------------------------------------------------
# Pure-PyTorch implementation
# ---------------------------------------------------------------------------------------------------


def _sample_columns(
    x_rows: Tensor,
    dy: Tensor,
    dx: Tensor,
    m: Tensor,
    base_y: Tensor,
    base_x: Tensor,
    height: int,
    width: int,
) -> Tensor:
    """Bilinearly sample the zero-padded input for a chunk of ``T`` kernel taps.

    Args:
        x_rows: zero-padded input in row layout ``(B*G*(H+2)*(W+2), C//G)``.
        dy, dx: offsets ``(B, oH, oW, G, T)``.
        m: modulation mask ``(B, oH, oW, G, T)``.
        base_y: un-deformed sample rows ``(oH, 1, 1, T)`` (``oy*stride - pad + i*dil``).
        base_x: un-deformed sample columns ``(oW, 1, T)``.
        height, width: ``H``, ``W`` of the unpadded input.

    Returns:
        Modulated samples ``(B*oH*oW*G*T, C//G)`` ordered ``(b, oy, ox, g, t)``.
    """
    batch, _, _, groups, _ = dy.shape
    hp = height + 2
    wp = width + 2
    # Clamping the position to [-2, _POS_LIMIT] never changes the result (everything beyond (-1, H)
    # samples 0) but keeps floor()/int conversion sane for huge offsets. The bounds are constants: a
    # float clamp bounded by a symbolic H does not survive the dynamo ONNX exporter's decompositions.
    y = (base_y + dy).clamp(-2.0, _POS_LIMIT)
    x = (base_x + dx).clamp(-2.0, _POS_LIMIT)
    y0f = torch.floor(y)
    x0f = torch.floor(x)
    ly = y - y0f
    lx = x - x0f
    hy = 1.0 - ly
    hx = 1.0 - lx
    # Padded coordinates: original -1 and H map onto the zero border, and clamping any farther corner
    # onto that border makes it contribute zero without an explicit validity mask.
    y0 = (y0f.to(torch.int64) + 1).clamp(0, hp - 1)
    x0 = (x0f.to(torch.int64) + 1).clamp(0, wp - 1)
    y1 = (y0f.to(torch.int64) + 2).clamp(0, hp - 1)
    x1 = (x0f.to(torch.int64) + 2).clamp(0, wp - 1)

    b_idx = torch.arange(batch, device=dy.device, dtype=torch.int64).view(batch, 1, 1, 1, 1)
    g_idx = torch.arange(groups, device=dy.device, dtype=torch.int64).view(1, 1, 1, groups, 1)
    plane = (b_idx * groups + g_idx) * hp  # (B, 1, 1, G, 1)
    row0 = (plane + y0) * wp
    row1 = (plane + y1) * wp

    dtype = x_rows.dtype
    corners = (
        (row0 + x0, hy * hx * m),
        (row0 + x1, hy * lx * m),
        (row1 + x0, ly * hx * m),
        (row1 + x1, ly * lx * m),
    )
    cols: Tensor | None = None
    for index, coeff in corners:
        values = x_rows.index_select(0, index.reshape(-1))
        weighted = values * coeff.reshape(-1, 1).to(dtype)
        cols = weighted if cols is None else cols + weighted
    assert cols is not None
    return cols


def _tap_origins(
    geometry: _ConvGeometry,
    kernel: tuple[int, int],
    out_size: tuple[int, int],
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Where each tap of each output pixel reads before its offset, in padded-input coordinates:
    rows ``(oH, 1, 1, K)`` and columns ``(oW, 1, K)``."""
    (sh, sw), (ph, pw), (dh, dw) = geometry
    (kh, kw), (out_h, out_w) = kernel, out_size
    taps = kh * kw
    tap_i = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * dh  # (K,)
    tap_j = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * dw  # (K,)
    out_y = torch.arange(out_h, device=device, dtype=dtype) * sh - ph  # (oH,)
    out_x = torch.arange(out_w, device=device, dtype=dtype) * sw - pw  # (oW,)
    base_y = out_y.view(-1, 1, 1, 1) + tap_i.view(1, 1, 1, taps)  # (oH, 1, 1, K)
    base_x = out_x.view(-1, 1, 1) + tap_j.view(1, 1, taps)  # (oW, 1, K)
    return base_y, base_x


def deform_conv2d_native(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    *,
    per_tap: bool = True,
) -> Tensor:
    """Pure-PyTorch modulated deformable convolution (no validation; see :func:`modulated_deform_conv2d`).

    Gathers bilinear samples from a zero-padded, channels-last copy of the input into im2col-like
    columns ``(B, oH*oW, G*T*C//G)`` and multiplies them with the matching weight slice. Traceable by
    ``torch.export`` (no ``.item()``, no boolean indexing, no data-dependent branches).

    Args:
        input: ``(B, C, H, W)``.
        offset: ``(B, 2*G*kH*kW, oH, oW)``, interleaved ``(dy, dx)`` per tap ``k = i*kW + j``.
        mask: ``(B, G*kH*kW, oH, oW)``.
        weight: ``(O, C, kH, kW)``.
        bias: ``(O,)`` or ``None``.
        stride, padding, dilation: int or ``(h, w)``.
        per_tap: loop over the ``kH*kW`` taps (peak memory ~ ``B*C*oH*oW`` per buffer; the eager op
            does so for large inputs) instead of sampling all taps at once (``(B, oH*oW, C*kH*kW)``
            buffers). Use ``per_tap=False`` when exporting a decomposed graph: ~6x fewer nodes.

    Returns:
        ``(B, O, oH, oW)`` in ``input.dtype``.
    """
    geometry = _ConvGeometry.of(stride, padding, dilation)
    batch, channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    taps = kh * kw
    out_h, out_w = offset.shape[2], offset.shape[3]
    groups = offset.shape[1] // (2 * taps)
    cpg = channels // groups

    # Positions are computed in at least float32 (fp16 cannot represent x + 0.3 at x ~ 256).
    pos_dtype = torch.promote_types(offset.dtype, torch.float32)
    device = input.device

    # Zero-padded channels-last rows: (B*G*(H+2)*(W+2), C//G).
    padded = F.pad(input, (1, 1, 1, 1))
    x_rows = (
        padded.reshape(batch, groups, cpg, (height + 2) * (width + 2)).permute(0, 1, 3, 2).reshape(-1, cpg)
    )

    # (B, 2*G*K, oH, oW) -> (B, oH, oW, G, K) for dy, dx and the mask.
    off = offset.reshape(batch, groups, taps, 2, out_h, out_w).to(pos_dtype)
    off_y = off[:, :, :, 0].permute(0, 3, 4, 1, 2)
    off_x = off[:, :, :, 1].permute(0, 3, 4, 1, 2)
    mod = mask.reshape(batch, groups, taps, out_h, out_w).permute(0, 3, 4, 1, 2).to(pos_dtype)
    base_y, base_x = _tap_origins(geometry, (kh, kw), (out_h, out_w), pos_dtype, device)

    # weight (O, C, kH, kW) -> (O, G, K, C//G) to match the (g, t, c) column order.
    w_gkc = weight.reshape(out_channels, groups, cpg, taps).permute(0, 1, 3, 2)

    chunks = [(k, k + 1) for k in range(taps)] if per_tap else [(0, taps)]
    out: Tensor | None = None
    for k0, k1 in chunks:
        cols = _sample_columns(
            x_rows,
            off_y[..., k0:k1],
            off_x[..., k0:k1],
            mod[..., k0:k1],
            base_y[..., k0:k1],
            base_x[..., k0:k1],
            height,
            width,
        )
        cols = cols.reshape(batch, out_h * out_w, groups * (k1 - k0) * cpg)
        w_chunk = w_gkc[:, :, k0:k1].reshape(out_channels, -1)
        part = torch.matmul(cols, w_chunk.t())  # (B, oH*oW, O)
        out = part if out is None else out + part
    assert out is not None
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.permute(0, 2, 1).reshape(batch, out_channels, out_h, out_w)


# ---------------------------------------------------------------------------------------------------
# Backend selection (torchvision kernel when it is really usable, native otherwise)
# ---------------------------------------------------------------------------------------------------

_backend_cache: dict[str, Callable[..., Tensor] | None] = {}
_backend_lock = threading.Lock()


def _probe_torchvision(device_type: str) -> Callable[..., Tensor] | None:
    """Return ``torchvision.ops.deform_conv2d`` if it imports, runs on ``device_type`` and agrees."""
    if os.environ.get(_BACKEND_ENV, "auto").strip().lower() == "native":
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchvision.ops import deform_conv2d as tv_deform_conv2d  # type: ignore[import-not-found]

        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 2, 5, 5, generator=gen)
        offset = torch.randn(1, 18, 5, 5, generator=gen) * 1.5
        mask = torch.rand(1, 9, 5, 5, generator=gen)
        weight = torch.randn(3, 2, 3, 3, generator=gen)
        bias = torch.randn(3, generator=gen)
        expected = deform_conv2d_native(x, offset, mask, weight, bias, 1, 1, 1)
        dev = torch.device(device_type)
        got = tv_deform_conv2d(
            x.to(dev),
            offset.to(dev),
            weight.to(dev),
            bias.to(dev),
            stride=(1, 1),
            padding=(1, 1),
            dilation=(1, 1),
            mask=mask.to(dev),
        )
        if not torch.allclose(got.cpu(), expected, atol=1e-4, rtol=1e-4):
            warnings.warn(
                "torchvision.ops.deform_conv2d disagrees with the native deformable convolution; "
                "using the native implementation",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return tv_deform_conv2d
    except Exception:
        return None


def _torchvision_kernel(device: torch.device) -> Callable[..., Tensor] | None:
    key = device.type
    if key not in _backend_cache:
        with _backend_lock:
            if key not in _backend_cache:
                _backend_cache[key] = _probe_torchvision(key)
    return _backend_cache[key]


def deform_conv_backend(device: torch.device | str = "cpu") -> str:
    """Return the kernel the eager op uses on ``device``: ``"torchvision"`` or ``"native"``.

    The first call per device type probes torchvision (import + a tiny call); the answer is cached.
    """
    return "native" if _torchvision_kernel(torch.device(device)) is None else "torchvision"


# ---------------------------------------------------------------------------------------------------
# Custom op: pem::modulated_deform_conv2d
# ---------------------------------------------------------------------------------------------------

_SCHEMA = (
    "(Tensor input, Tensor offset, Tensor mask, Tensor weight, Tensor? bias, "
    "int[] stride, int[] padding, int[] dilation) -> Tensor"
)


def _forward_impl(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """``torch.ops.pem.modulated_deform_conv2d``: unvalidated op, returns ``(B, O, oH, oW)`` (contiguous).

    Runs the selected backend. The op never records autograd history itself (torch.library calls it
    below the autograd layer); :func:`_backward` calls this function under grad mode to differentiate it.
    """
    geometry = _ConvGeometry(stride, padding, dilation).as_tuples()
    tv_kernel = _torchvision_kernel(input.device)
    if tv_kernel is not None:
        out = tv_kernel(input, offset, weight, bias, mask=mask, **geometry._asdict())
        return out.contiguous()
    # Small problems: one vectorised pass (fewer kernel launches); large ones: loop over the taps so
    # the sampled columns never exceed ~B*C*oH*oW elements per buffer.
    taps = weight.shape[2] * weight.shape[3]
    columns = input.shape[0] * input.shape[1] * taps * offset.shape[2] * offset.shape[3]
    out = deform_conv2d_native(
        input, offset, mask, weight, bias, *geometry, per_tap=columns > _PER_TAP_THRESHOLD
    )
    return out.contiguous()


modulated_deform_conv2d_op = torch.library.custom_op(
    "pem::modulated_deform_conv2d", _forward_impl, mutates_args=(), schema=_SCHEMA
)


def conv_output_size(size: Any, kernel: Any, stride: int, padding: int, dilation: int) -> Any:
    """Output side of a convolution: ``(size + 2*padding - dilation*(kernel-1) - 1) // stride + 1``.

    Works on ints and on symbolic sizes (``torch.SymInt``) alike.
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _output_shape(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    geometry: _ConvGeometry,
) -> tuple[Any, Any, Any, Any]:
    """Check shapes, dtypes, devices and conv parameters; return the output shape ``(B, O, oH, oW)``.

    Used by :func:`modulated_deform_conv2d` before it calls the op and by the op's fake kernel (sizes may
    be symbolic there). Raises ``ValueError`` naming the inconsistent argument.
    """
    stride, padding, dilation = geometry.as_tuples()
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(
            f"deform_conv2d: need stride >= 1, dilation >= 1, padding >= 0, "
            f"got stride={stride}, padding={padding}, dilation={dilation}"
        )
    for name, t in (("input", input), ("offset", offset), ("mask", mask), ("weight", weight)):
        if t.dim() != 4:
            raise ValueError(f"deform_conv2d: {name} must be 4-D, got shape {tuple(t.shape)}")
    batch, channels, height, width = input.shape
    out_channels, w_channels, kh, kw = weight.shape
    if w_channels != channels:
        raise ValueError(
            f"deform_conv2d: weight {tuple(weight.shape)} expects {w_channels} input channels "
            f"but input {tuple(input.shape)} has {channels} (groups=1 only)"
        )
    if kh < 1 or kw < 1:
        raise ValueError(f"deform_conv2d: empty kernel in weight {tuple(weight.shape)}")
    out_h = conv_output_size(height, kh, stride[0], padding[0], dilation[0])
    out_w = conv_output_size(width, kw, stride[1], padding[1], dilation[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"deform_conv2d: input {tuple(input.shape)} too small for kernel ({kh}, {kw}) with "
            f"stride={stride}, padding={padding}, dilation={dilation}"
        )
    taps = kh * kw
    groups = offset.shape[1] // (2 * taps)
    if offset.shape[1] % (2 * taps) != 0 or groups < 1:
        raise ValueError(
            f"deform_conv2d: offset channels ({offset.shape[1]}) must be a positive multiple of "
            f"2*kH*kW = {2 * taps}"
        )
    if channels % groups != 0:
        raise ValueError(
            f"deform_conv2d: input channels ({channels}) not divisible by offset groups ({groups})"
        )
    expected_offset = (batch, 2 * groups * taps, out_h, out_w)
    if tuple(offset.shape) != expected_offset:
        raise ValueError(
            f"deform_conv2d: offset shape {tuple(offset.shape)} != expected {expected_offset} "
            "(B, 2*G*kH*kW, oH, oW)"
        )
    expected_mask = (batch, groups * taps, out_h, out_w)
    if tuple(mask.shape) != expected_mask:
        raise ValueError(
            f"deform_conv2d: mask shape {tuple(mask.shape)} != expected {expected_mask} (B, G*kH*kW, oH, oW)"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"deform_conv2d: bias shape {tuple(bias.shape)} != expected ({out_channels},)")
    tensors = [input, offset, mask, weight] + ([bias] if bias is not None else [])
    if any(t.dtype != input.dtype for t in tensors):
        raise ValueError(
            "deform_conv2d: all tensors must share one dtype, got " + ", ".join(str(t.dtype) for t in tensors)
        )
    if not input.is_floating_point():
        raise ValueError(f"deform_conv2d: floating-point tensors required, got {input.dtype}")
    if any(t.device != input.device for t in tensors):
        raise ValueError("deform_conv2d: all tensors must be on the same device")
    return (batch, out_channels, out_h, out_w)


@modulated_deform_conv2d_op.register_fake
def _modulated_deform_conv2d_fake(*args: Any) -> Tensor:
    """Fake (meta) kernel: the checked output shape, as an empty tensor.

    ``args`` are the op's arguments in ``_SCHEMA`` order, as the dispatcher passes them (positionally,
    the schema having no keyword-only argument), the same tuple :func:`_setup_context` unpacks.
    """
    input, offset, mask, weight, bias, *geometry = args
    return input.new_empty(_output_shape(input, offset, mask, weight, bias, _ConvGeometry(*geometry)))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    input, offset, mask, weight, bias, *geometry = inputs
    ctx.save_for_backward(input, offset, mask, weight, bias)
    ctx.conv_args = _ConvGeometry(*geometry).as_tuples()


def _backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
    saved = ctx.saved_tensors
    needs = ctx.needs_input_grad[:5]
    leaves = [
        None if t is None else t.detach().requires_grad_(bool(need))
        for t, need in zip(saved, needs, strict=True)
    ]
    wanted = [i for i, (t, need) in enumerate(zip(leaves, needs, strict=True)) if need and t is not None]
    grads: list[Tensor | None] = [None] * 5
    if wanted:
        with torch.enable_grad():
            out = _forward_impl(*leaves, *ctx.conv_args)
        computed = torch.autograd.grad(out, [leaves[i] for i in wanted], grad_output, allow_unused=True)
        for i, g in zip(wanted, computed, strict=True):
            grads[i] = torch.zeros_like(saved[i]) if g is None else g
    return (*grads, None, None, None)


torch.library.register_autograd("pem::modulated_deform_conv2d", _backward, setup_context=_setup_context)


def _deform_conv_flop(
    input_shape: Sequence[int],
    offset_shape: Sequence[int],
    mask_shape: Sequence[int],
    weight_shape: Sequence[int],
    bias_shape: Sequence[int] | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    *args: Any,
    out_shape: Sequence[int] | None = None,
    **kwargs: Any,
) -> int:
    """FLOPs as for a dense convolution: ``2 * B * O * oH * oW * C * kH * kW`` (sampling not counted)."""
    batch, channels = input_shape[0], input_shape[1]
    out_channels, _, kh, kw = weight_shape
    if out_shape is not None:
        out_h, out_w = out_shape[2], out_shape[3]
    else:
        out_h, out_w = offset_shape[2], offset_shape[3]
    return 2 * batch * out_channels * out_h * out_w * channels * kh * kw


if torch.ops.pem.modulated_deform_conv2d not in flop_registry:
    register_flop_formula(torch.ops.pem.modulated_deform_conv2d)(_deform_conv_flop)


# ---------------------------------------------------------------------------------------------------
# Public functional wrapper and module
# ---------------------------------------------------------------------------------------------------


def modulated_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> Tensor:
    """Modulated deformable convolution (DCNv2): validated wrapper of the custom op.

    Calls ``torch.ops.pem.modulated_deform_conv2d`` after checking shapes, dtypes and devices.

    Args:
        input: ``(B, C, H, W)``.
        offset: ``(B, 2*G*kH*kW, oH, oW)``, interleaved ``(dy, dx)`` per tap ``k = i*kW + j``.
        mask: ``(B, G*kH*kW, oH, oW)`` modulation (e.g. a sigmoid output).
        weight: ``(O, C, kH, kW)``.
        bias: ``(O,)`` or ``None``.
        stride, padding, dilation: int or ``(h, w)``.

    Returns:
        ``(B, O, oH, oW)`` with ``oH = (H + 2*pad_h - dil_h*(kH-1) - 1) // stride_h + 1`` (same for W).

    Raises:
        ValueError: on inconsistent shapes, dtypes, devices or conv parameters.
    """
    geometry = _ConvGeometry.of(stride, padding, dilation)
    _output_shape(input, offset, mask, weight, bias, geometry)
    return torch.ops.pem.modulated_deform_conv2d(input, offset, mask, weight, bias, *map(list, geometry))


class ModulatedDeformConv2d(nn.Module):
    """Modulated deformable convolution layer (detectron2 ``ModulatedDeformConv`` equivalent, groups=1).

    Offsets and mask are computed outside (e.g. by a plain ``Conv2d`` with ``3*G*kH*kW`` channels).

    Args:
        in_channels: ``C``.
        out_channels: ``O``.
        kernel_size, stride, padding, dilation: int or ``(h, w)``.
        bias: add a learnable ``(O,)`` bias.

    Shapes:
        x ``(B, C, H, W)``, offset ``(B, 2*G*kH*kW, oH, oW)``, mask ``(B, G*kH*kW, oH, oW)``
        -> ``(B, O, oH, oW)``.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair = 3,
        stride: IntOrPair = 1,
        padding: IntOrPair = 1,
        dilation: IntOrPair = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding, self.dilation = _ConvGeometry.of(stride, padding, dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """c2_msra_fill: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, bias 0."""
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        """Apply the layer.

        Shapes: ``x (B, C, H, W)``, ``offset (B, 2*G*kH*kW, oH, oW)``, ``mask (B, G*kH*kW, oH, oW)``
        -> ``(B, O, oH, oW)``.
        """
        return modulated_deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
        )
        return s + ("" if self.bias is not None else ", bias=False")
