"""An FS convolution computed from its summary, without the dense filter bank.

Filter ``(k1, k2, k3)`` of an FS layer reads the summary ``M`` (Cm, Hm, Wm)
at ``M[(k3 z + c) mod Cm, (k1 x + s1) mod Hm, (k2 y + s2) mod Wm]``
(:func:`~fsnet_mmdet.layers.index.filter_index`). Its output at position
``p`` is therefore::

    y_(k1,k2,k3)(p)
      = sum_(c,u,v) x_c(p*stride + (u, v)*dilation)
                    * M[(k3 z + c) mod Cm, (k1 x + u) mod Hm, (k2 y + v) mod Wm]
      = sum_(u,v) Z[k3, (k1 x + u) mod Hm, (k2 y + v) mod Wm](p*stride + (u, v)*dilation)

with the *summary response*::

    Z[k3, m, n](q) = sum_c x_c(q) * M[(k3 z + c) mod Cm, m, n]

a 1x1 convolution with ``K3 * Hm * Wm = K * x * y`` outputs (stage 1). Stage 2
adds, for each of the ``S1 * S2`` taps ``(u, v)``, one shifted slice of Z into
the output; it has no multiplications. Per output pixel at stride 1 this is
``C * K * x * y`` multiply-adds and ``S1 * S2 * K`` additions instead of the
dense ``C * S1 * S2 * K`` multiply-adds (2.25x fewer multiply-adds for a 3x3
kernel with the paper's x = y = 2). The result equals ``F.conv2d`` with the
extracted filters up to float rounding (the sums are taken in another order).

:func:`choose_compute` picks between this and the filters path
(:class:`~fsnet_mmdet.layers.fsconv.FSConv`'s ``compute='auto'``);
:func:`summary_macs` and :func:`filter_macs` count both.
:func:`summary_conv2d_unrolled` is the same op in exportable ops only (the
ONNX export's mode ``'summary'``).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .geometry import FSGeometry

#: ``choose_compute``'s rule, measured with benchmarks/bench_summary_conv.py
#: on this project's 2-core CPU (SSD300's full-width layers, batch 1 and 8,
#: docs/performance.md): the summary path was faster than the filters path
#: for spatial stride-1 kernels with at least MIN_CHANNELS input channels
#: whose summary response Z (N * K x y * H * W elements, stage 1's output)
#: is mid-sized; slower on 1x1 and strided layers, on fewer channels, on
#: small responses in eval (the S1 S2 slice additions' fixed cost) and on
#: large ones (Z's memory traffic).
MIN_MAC_RATIO = 1.6
#: ... with at least this many input channels,
MIN_CHANNELS = 128
#: ... in eval (no gradient) with dilation 1 and Z in this range,
EVAL_RESPONSE_RANGE = (1_000_000, 8_000_000)
#: ... in training (forward and backward) with Z up to this many elements,
TRAIN_MAX_RESPONSE = 8_000_000
#: ... or up to this many with at least WIDE_CHANNELS input channels,
TRAIN_MAX_RESPONSE_WIDE = 50_000_000
WIDE_CHANNELS = 256
#: ... on these device types (measured; CUDA is not).
SUMMARY_DEVICE_TYPES = ('cpu',)
#: ``padding_mode`` values of ``nn.Conv2d``.
PADDING_MODES = ('zeros', 'reflect', 'replicate', 'circular')

IntPair = Union[int, Tuple[int, int]]
Padding = Union[str, int, Tuple[int, int]]


class MacCount(NamedTuple):
    """Operation count of one conv path for one image.

    Attributes:
        macs: multiply-adds.
        adds: additions without a multiplication (the summary path's stage 2).
    """

    macs: int
    adds: int = 0

    @property
    def total(self) -> int:
        """``macs + adds``: what :func:`choose_compute`'s ratio compares."""
        return self.macs + self.adds


class _Layout(NamedTuple):
    """Where stage 1 runs and how padding is done, for one call's shapes."""

    pads: Tuple[Tuple[int, int], Tuple[int, int]]  # ((top, bottom), (left, right))
    out_hw: Tuple[int, int]
    mode: str  # 'clip' (zeros), 'pad_input' or 'pad_summary' (other modes)
    stage1_hw: Tuple[int, int]  # positions the 1x1 conv computes


def _pair(name: str, value: IntPair) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f'{name} must be an int or a pair of ints, got {value!r}')
    return pair


def _pads(padding: Padding, kernel: Tuple[int, int], stride: Tuple[int, int],
          dilation: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Per-axis (before, after) padding, as ``nn.Conv2d`` applies it."""
    if padding == 'valid':
        return ((0, 0), (0, 0))
    if padding == 'same':
        if stride != (1, 1):
            raise ValueError("padding='same' is not supported for strided "
                             "convolutions")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    if isinstance(padding, str):
        raise ValueError(f"padding must be 'valid', 'same', an int or a pair "
                         f"of ints, got {padding!r}")
    return tuple((p, p) for p in _pair('padding', padding))


def _layout(geometry: FSGeometry, in_hw: Tuple[int, int], stride: Tuple[int, int],
            padding: Padding, dilation: Tuple[int, int],
            padding_mode: str) -> _Layout:
    """Output size, padding, and the positions stage 1 computes.

    Only the input rows (columns) up to the last one a tap reads are used.
    Zero padding is not materialized: taps that fall into it are clipped
    (``'clip'``). Other modes pad the input before stage 1 (``'pad_input'``:
    C channels copied, plus stage-1 multiply-adds on the border) or pad the
    summary response after it (``'pad_summary'``: K x y channels copied),
    whichever touches fewer elements, counting a copied element and a
    multiply-add alike.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f'padding_mode must be one of {PADDING_MODES}, got '
                         f'{padding_mode!r}')
    kernel = geometry.kernel_size
    pads = _pads(padding, kernel, stride, dilation)
    out, extent = [], []
    for size, (lo, hi), k, s, d in zip(in_hw, pads, kernel, stride, dilation):
        o = (size + lo + hi - d * (k - 1) - 1) // s + 1
        if o < 1:
            raise ValueError(f'input of size {tuple(in_hw)} (padded by {pads}) '
                             f'is smaller than the kernel {kernel} at dilation '
                             f'{dilation}')
        out.append(o)
        extent.append((o - 1) * s + d * (k - 1) + 1)  # padded positions read
    if padding_mode == 'zeros':
        used = tuple(max(1, min(size, e - lo))
                     for size, e, (lo, _) in zip(in_hw, extent, pads))
        return _Layout(pads, tuple(out), 'clip', used)
    padded = math.prod(size + lo + hi for size, (lo, hi) in zip(in_hw, pads))
    channels, responses = geometry.in_channels, _responses(geometry)
    pad_input = (channels * padded + channels * responses * (
        math.prod(extent) - math.prod(in_hw)) <= responses * padded)
    if pad_input:
        return _Layout(pads, tuple(out), 'pad_input', tuple(extent))
    return _Layout(pads, tuple(out), 'pad_summary', tuple(in_hw))


def _responses(geometry: FSGeometry) -> int:
    """Stage 1's output channels, ``K3 * Hm * Wm = K * x * y``."""
    return math.prod(geometry.summary_shape[1:]) * geometry.sampling[2]


# ------------------------------------------------------------------ stage 2
class _ShiftPlan(NamedTuple):
    """The slices stage 2 adds, for one call's shapes (:func:`_shift_plan`)."""

    split_z: Tuple[int, ...]   # Z's channels as (K1, x, K2, y, K3)
    split_out: Tuple[int, ...]  # the output's channels as (K1, K2, K3)
    z_hw: Tuple[int, int]
    out_hw: Tuple[int, int]
    copies: Tuple[tuple, ...]  # (dst, src) pairs that initialize the output
    adds: Tuple[tuple, ...]    # (dst, src) pairs added onto it


def _axis_taps(kernel: int, z_size: int, out_size: int, stride: int,
               dilation: int, pad: int) -> List[Optional[Tuple[slice, slice]]]:
    """Per tap: (output slice, Z slice) of the outputs whose input is in Z.

    Output ``o`` of tap ``u`` reads Z at ``o * stride + u * dilation - pad``.
    """
    taps = []
    for u in range(kernel):
        offset = u * dilation - pad
        first = max(0, -(offset // stride))
        stop = min(out_size, (z_size - 1 - offset) // stride + 1)
        if stop <= first:
            taps.append(None)  # every output of this tap reads padding
            continue
        start = first * stride + offset
        taps.append((slice(first, stop),
                     slice(start, start + (stop - first - 1) * stride + 1, stride)))
    return taps


def _roll_blocks(count: int, shift: int) -> List[Tuple[slice, slice]]:
    """(destination, source) slices of ``dst[i] = src[(i + shift) mod count]``."""
    shift %= count
    if not shift:
        return [(slice(None), slice(None))]
    return [(slice(0, count - shift), slice(shift, count)),
            (slice(count - shift, count), slice(0, shift))]


@lru_cache(maxsize=512)
def _shift_plan(geometry: FSGeometry, z_hw: Tuple[int, int],
                out_hw: Tuple[int, int], stride: Tuple[int, int],
                dilation: Tuple[int, int], pads: Tuple[int, int]) -> _ShiftPlan:
    """Stage 2 as slices of Z (N, K1, x, K2, y, K3, Hz, Wz) and of the output
    (N, K1, K2, K3, Ho, Wo).

    Tap ``(u, v)`` reads summary rows ``(k1 x + u) mod Hm = ((k1 + u // x)
    mod K1) x + u mod x``: the row slice ``u mod x`` of Z, rolled by
    ``u // x`` along K1 (at most two blocks), likewise for columns. The
    first tap that covers every output pixel initializes the output
    (``copies``); without one, the output starts at zero.
    """
    (k1, k2, k3), (x, y, _) = geometry.sampling, geometry.strides
    s1, s2 = geometry.kernel_size
    rows = _axis_taps(s1, z_hw[0], out_hw[0], stride[0], dilation[0], pads[0])
    cols = _axis_taps(s2, z_hw[1], out_hw[1], stride[1], dilation[1], pads[1])
    full_rows, full_cols = slice(0, out_hw[0]), slice(0, out_hw[1])
    copies, adds = [], []
    for u, row in enumerate(rows):
        for v, col in enumerate(cols):
            if row is None or col is None:
                continue
            ops = [((slice(None), d1, d2, slice(None), row[0], col[0]),
                    (slice(None), r1, u % x, r2, v % y, slice(None), row[1], col[1]))
                   for d1, r1 in _roll_blocks(k1, u // x)
                   for d2, r2 in _roll_blocks(k2, v // y)]
            if not copies and row[0] == full_rows and col[0] == full_cols:
                copies = ops
            else:
                adds += ops
    return _ShiftPlan((k1, x, k2, y, k3), (k1, k2, k3), tuple(z_hw),
                      tuple(out_hw), tuple(copies), tuple(adds))


def _memory_format(t: Tensor) -> torch.memory_format:
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _accumulator(dtype: torch.dtype) -> torch.dtype:
    """Half-precision sums are taken in float32 (one rounding at the end)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _shift_add(z: Tensor, plan: _ShiftPlan) -> Tensor:
    """Stage 2: the output (N, K1 K2 K3, Ho, Wo) in grid order, from Z."""
    out = torch.empty((z.shape[0], math.prod(plan.split_out), *plan.out_hw),
                      dtype=_accumulator(z.dtype), device=z.device,
                      memory_format=_memory_format(z))
    dst, src = out.unflatten(1, plan.split_out), z.unflatten(1, plan.split_z)
    if not plan.copies:
        out.zero_()
    for d, s in plan.copies:
        dst[d].copy_(src[s])
    for d, s in plan.adds:
        dst[d].add_(src[s])
    return out.to(z.dtype)


def _shift_add_adjoint(grad: Tensor, plan: _ShiftPlan) -> Tensor:
    """The transpose of :func:`_shift_add`: Z's gradient from the output's."""
    gz = torch.empty((grad.shape[0], math.prod(plan.split_z), *plan.z_hw),
                     dtype=_accumulator(grad.dtype), device=grad.device,
                     memory_format=_memory_format(grad)).zero_()
    dst, src = gz.unflatten(1, plan.split_z), grad.unflatten(1, plan.split_out)
    for d, s in plan.copies + plan.adds:
        dst[s].add_(src[d])
    return gz.to(grad.dtype)


class _ShiftAdd(torch.autograd.Function):
    """Stage 2 with its adjoint as backward (each the other's backward, so
    gradients of any order). In-place adds on slices of one output buffer;
    autograd's own handling of those (a full-size gradient copy per slice)
    is avoided."""

    @staticmethod
    def forward(ctx, z: Tensor, plan: _ShiftPlan) -> Tensor:
        ctx.plan = plan
        return _shift_add(z, plan)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _ShiftAddAdjoint.apply(grad, ctx.plan), None


class _ShiftAddAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad: Tensor, plan: _ShiftPlan) -> Tensor:
        ctx.plan = plan
        return _shift_add_adjoint(grad, plan)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _ShiftAdd.apply(grad, ctx.plan), None


# ------------------------------------------------------------------ the op
def summary_weight(summary: Tensor, geometry: FSGeometry) -> Tensor:
    """Stage 1's 1x1 weight: ``W[(m, n, k3), c] = M[(k3 z + c) mod Cm, m, n]``.

    Args:
        summary: (Cm, Hm, Wm) summary M.
        geometry: the layer's geometry (3D layout).

    Returns:
        (Hm * Wm * K3, C, 1, 1) weight; output channel ``(m * Wm + n) * K3 +
        k3`` is the summary response ``Z[k3, m, n]``.
    """
    cm, hm, wm = geometry.summary_shape
    k3, z, c = geometry.sampling[2], geometry.strides[2], geometry.in_channels
    chan = (torch.arange(k3, device=summary.device).view(k3, 1) * z +
            torch.arange(c, device=summary.device).view(1, c)) % cm
    # (Hm, Wm, Cm) -> (Hm, Wm, K3 * C): one gather of the (small) weight.
    weight = summary.permute(1, 2, 0).index_select(2, chan.reshape(-1))
    return weight.reshape(hm * wm * k3, c, 1, 1)


def summary_conv2d(x: Tensor, summary: Tensor, geometry: FSGeometry,
                   bias: Optional[Tensor] = None, stride: IntPair = 1,
                   padding: Padding = 0, dilation: IntPair = 1,
                   padding_mode: str = 'zeros') -> Tensor:
    """An FS convolution computed from its summary (module docstring).

    Equals ``F.conv2d(pad(x), filters, bias, stride, 0, dilation)`` with
    ``filters = summary.reshape(-1)[filter_index(geometry)]`` (any interleave;
    ``pad`` as ``nn.Conv2d`` with ``padding_mode``), up to float rounding:

    * stage 1: ``Z = conv1x1(x, summary_weight(summary, geometry))``, shape
      (N, K1 x K2 y K3, H', W') over the input positions the taps read;
    * stage 2: ``y_(k1,k2,k3)(p) = sum_(u,v) Z[k3, (k1 x + u) mod Hm,
      (k2 y + v) mod Wm](p * stride + (u, v) * dilation)``, accumulated in
      place into the output one (rolled, strided) slice of Z per tap;
    * output channel ``o`` is grid filter ``interleave_order(K, g)[o]``;
      then the bias.

    Zero padding is not materialized (taps reading it are clipped); another
    ``padding_mode`` pads x or Z, whichever is cheaper. Differentiable
    w.r.t. ``x``, ``summary`` and ``bias``; the summary's gradient is the sum
    over the filter elements that read each summary element (Eq. 2's
    numerator, ``grad_reduction='sum'``; see :func:`scale_grad` for the mean).

    Args:
        x: (N, C, H, W) or (C, H, W) input.
        summary: (Cm, Hm, Wm) summary, of x's dtype and device.
        geometry: the layer's FSGeometry (3D layout).
        bias: (K,) or None.
        stride, padding, dilation, padding_mode: as ``nn.Conv2d``
            (``padding`` also ``'valid'`` or ``'same'``).

    Returns:
        (N, K, Ho, Wo) output ((K, Ho, Wo) for an unbatched input).
    """
    if x.dim() == 3:
        return summary_conv2d(x.unsqueeze(0), summary, geometry, bias, stride,
                              padding, dilation, padding_mode).squeeze(0)
    if tuple(summary.shape) != tuple(geometry.summary_shape):
        raise ValueError(f'summary has shape {tuple(summary.shape)}, the '
                         f'geometry {geometry.summary_shape}')
    stride, dilation = _pair('stride', stride), _pair('dilation', dilation)
    layout = _layout(geometry, tuple(x.shape[-2:]), stride, padding, dilation,
                     padding_mode)
    (top, bottom), (left, right) = layout.pads
    h1, w1 = layout.stage1_hw
    pads = (top, left)
    if layout.mode == 'pad_input':
        x = F.pad(x, (left, right, top, bottom), mode=padding_mode)
        pads = (0, 0)
    if x.shape[-2:] != (h1, w1) and layout.mode != 'pad_summary':
        x = x[..., :h1, :w1]  # rows / columns no tap reads
    z = F.conv2d(x, summary_weight(summary, geometry))
    if layout.mode == 'pad_summary':
        z = F.pad(z, (left, right, top, bottom), mode=padding_mode)
        pads = (0, 0)
    plan = _shift_plan(geometry, tuple(z.shape[-2:]), layout.out_hw, stride,
                       dilation, pads)
    out = _ShiftAdd.apply(z, plan)
    g = geometry.interleave
    if g > 1:  # output a * g + c is grid filter c * (K / g) + a
        out = out.unflatten(1, (g, -1)).transpose(1, 2).flatten(1, 2)
    if bias is not None:  # in place: keeps the dtype (autocast), no copy
        out.add_(bias.view(1, -1, 1, 1))
    return out


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (scale, ) = ctx.saved_tensors
        return grad * scale, None


def scale_grad(t: Tensor, scale: Tensor) -> Tensor:
    """Identity forward; the backward multiplies the gradient by ``scale``.

    With ``scale = inv_multiplicity`` (of the summary's shape) on the summary
    given to :func:`summary_conv2d`, the summary's gradient is Eq. 2's mean
    (``grad_reduction='mean'``) instead of the sum.

    Args:
        t: any tensor.
        scale: a tensor of ``t``'s shape (not differentiated).
    """
    return _ScaleGrad.apply(t, scale)


# ------------------------------------------------------------- accounting
def filter_macs(geometry: FSGeometry, out_hw: Tuple[int, int]) -> MacCount:
    """Multiply-adds of the filters path for one image: ``K C S1 S2`` per
    output pixel, taps on padding included (as the usual FLOP counts). Not
    counted: the per-call extraction of the filter bank (K C S1 S2 copies)
    and the bias."""
    return MacCount(math.prod(geometry.filter_shape) * math.prod(out_hw))


def summary_macs(geometry: FSGeometry, in_hw: Tuple[int, int],
                 out_hw: Tuple[int, int], stride: IntPair = 1, *,
                 padding: Optional[Padding] = None, dilation: IntPair = 1,
                 padding_mode: str = 'zeros') -> MacCount:
    """Operations of :func:`summary_conv2d` for one image.

    ``macs``: stage 1, ``C * K * x * y`` (= ``C * K3 * Hm * Wm``) per
    position it runs on: with ``padding=None`` every input position
    (``in_hw``); with the layer's ``padding`` the positions
    :func:`summary_conv2d` computes (the input up to the last row / column a
    tap reads; with a padding mode other than ``'zeros'`` that pads the input
    first, the padded border too). ``adds``: stage 2, ``S1 * S2 * K`` per
    output pixel, one addition per tap and filter, counting taps on zero
    padding (which the implementation skips) and the first tap (which it
    copies) like the others: an upper bound, like :func:`filter_macs`'s count
    of taps on padding. Not counted: the per-call gather of stage 1's weight
    (K x y C copies), the copies of padding modes other than zeros, the bias.

    Args:
        geometry: the layer's geometry.
        in_hw: input (H, W).
        out_hw: output (Ho, Wo).
        stride: the conv's stride (with ``padding``: checks ``out_hw``).
        padding: None, or the conv's padding.
        dilation: the conv's dilation (with ``padding``).
        padding_mode: the conv's padding mode (with ``padding``).
    """
    positions = tuple(in_hw)
    if padding is not None:
        layout = _layout(geometry, tuple(in_hw), _pair('stride', stride),
                         padding, _pair('dilation', dilation), padding_mode)
        if layout.out_hw != tuple(out_hw):
            raise ValueError(f'out_hw={tuple(out_hw)} is not the output '
                             f'{layout.out_hw} of this padding and stride')
        positions = layout.stage1_hw
    return MacCount(geometry.in_channels * _responses(geometry) * math.prod(positions),
                    math.prod(geometry.kernel_size) * geometry.num_filters *
                    math.prod(out_hw))


def product_sharing(index: Tensor) -> float:
    """How far any exact product-sharing scheme can cut a layer's multiplications.

    Each multiply-add of the dense layer multiplies one weight element, the
    summary element ``j = index[k, c, u, v]``, with one input element: input
    channel ``c`` at position ``q = p + (u, v)`` for output position ``p``
    (stride 1). A scheme that computes each distinct product ``s_j x_c(q)``
    once and adds it into every output that needs it needs, per input
    position ``q`` away from the border, one multiplication per distinct
    pair ``(j, c)`` that some filter reads at some tap; the dense layer needs
    ``K C S1 S2`` per output position. The 3D summary's two-stage scheme
    (:func:`summary_conv2d`, stage 1) computes exactly these products, so it
    reaches the bound; a 1D summary (FSLinear's segments, FSConv
    ``layout='1d'``) reads each ``(j, c)`` once (ratio 1: nothing to share).

    Args:
        index: (K, C, S1, S2) flat summary indices of a conv's filters, or
            (K, D) of a linear layer (D inputs, each its own channel).

    Returns:
        ``index.numel()`` / the number of distinct ``(j, c)`` pairs: the
        factor by which the fewest multiplications of an exact
        product-sharing scheme are below the dense layer's (1.0: none).
    """
    k, c = index.shape[:2]
    pairs = index.reshape(k, c, -1).long() * c + torch.arange(
        c, device=index.device).view(1, c, 1)
    return index.numel() / torch.unique(pairs).numel()


def choose_compute(geometry: FSGeometry, stride: IntPair, dilation: IntPair,
                   input_shape: Tuple[int, ...], device_type: str,
                   training: bool) -> str:
    """``'summary'`` or ``'filters'``: which path FSConv's ``compute='auto'`` runs.

    ``'summary'`` only for a spatial kernel (S1 S2 > 1) at stride 1 with at
    least :data:`MIN_CHANNELS` input channels, on a device type of
    :data:`SUMMARY_DEVICE_TYPES`, where the filters path needs at least
    :data:`MIN_MAC_RATIO` times the summary path's operations
    (``MacCount.total``) and the summary response Z has
    ``N * K x y * H * W`` elements

    * in eval (``training=False``): within :data:`EVAL_RESPONSE_RANGE`, at
      dilation 1;
    * in training: at most :data:`TRAIN_MAX_RESPONSE`, or
      :data:`TRAIN_MAX_RESPONSE_WIDE` with at least :data:`WIDE_CHANNELS`
      input channels.

    The thresholds are this project's measurement (the constants' comment);
    on another machine, run benchmarks/bench_summary_conv.py.

    Args:
        geometry: the layer's geometry.
        stride: the conv's stride.
        dilation: the conv's dilation.
        input_shape: (N, C, H, W) or (C, H, W) of the input.
        device_type: e.g. ``'cpu'``, ``'cuda'``.
        training: whether a gradient will flow (forward and backward).
    """
    if (math.prod(geometry.kernel_size) == 1 or _pair('stride', stride) != (1, 1)
            or geometry.in_channels < MIN_CHANNELS
            or device_type not in SUMMARY_DEVICE_TYPES):
        return 'filters'
    in_hw = tuple(input_shape[-2:])
    batch = input_shape[0] if len(input_shape) == 4 else 1
    ratio = (filter_macs(geometry, in_hw).total /
             summary_macs(geometry, in_hw, in_hw).total)
    if ratio < MIN_MAC_RATIO:
        return 'filters'
    response = batch * _responses(geometry) * math.prod(in_hw)
    if training:
        limit = (TRAIN_MAX_RESPONSE_WIDE if geometry.in_channels >= WIDE_CHANNELS
                 else TRAIN_MAX_RESPONSE)
        return 'summary' if response <= limit else 'filters'
    low, high = EVAL_RESPONSE_RANGE
    return ('summary' if _pair('dilation', dilation) == (1, 1)
            and low <= response <= high else 'filters')


# ------------------------------------------------------- exportable form
def summary_weight_tiled(summary: Tensor, geometry: FSGeometry) -> Tensor:
    """:func:`summary_weight` without an index: tile, slice, reshape.

    ``W[(m, n, k3), c] = M[(k3 z + c) mod Cm, m, n]``: along the channel axis,
    row ``k3`` is the window of length C at ``k3 z`` of the summary repeated
    end to end. With rows of length ``R = z + Cm * ceil((C - z) / Cm)``
    (``R >= C``, ``R = z`` mod ``Cm``), the first ``K3 * R`` elements of the
    repeated summary, reshaped to (K3, R), hold those windows in their first
    C columns. The same tensor as :func:`summary_weight`, from ops that need
    no stored table (an ONNX graph: Transpose, Tile, Slice, Reshape on the
    summary, which a runtime folds into the weight once).

    Args:
        summary: (Cm, Hm, Wm) summary M.
        geometry: the layer's geometry (3D layout).

    Returns:
        (Hm * Wm * K3, C, 1, 1) weight, as :func:`summary_weight`.
    """
    cm, hm, wm = geometry.summary_shape
    k3, z, c = geometry.sampling[2], geometry.strides[2], geometry.in_channels
    row = z + cm * max(0, -(-(c - z) // cm))
    reps = -(-(k3 * row) // cm)
    tiled = summary.permute(1, 2, 0)  # (Hm, Wm, Cm)
    if reps > 1:
        tiled = tiled.repeat(1, 1, reps)
    if reps * cm != k3 * row:
        tiled = tiled[..., :k3 * row]
    tiled = tiled.reshape(hm, wm, k3, row)
    if row != c:
        tiled = tiled[..., :c]
    return tiled.reshape(hm * wm * k3, c, 1, 1)


def _span(start: int, stop: int, size: int, step: int = 1) -> slice:
    """``slice(start, stop, step)``, or ``slice(None)`` where that is all of
    ``size`` (no node in a trace)."""
    if start == 0 and step == 1 and stop >= size:
        return slice(None)
    return slice(start, stop, step)


def summary_conv2d_unrolled(x: Tensor, summary: Tensor, geometry: FSGeometry,
                            bias: Optional[Tensor] = None, stride: IntPair = 1,
                            padding: Padding = 0, dilation: IntPair = 1,
                            padding_mode: str = 'zeros') -> Tensor:
    """:func:`summary_conv2d` in exportable ops only (the ONNX export's form).

    The same result up to float rounding (the taps are summed in the same
    order, those on zero padding included), from out-of-place ops that the
    TorchScript ONNX exporter maps to standard ONNX nodes (Transpose, Tile,
    Slice, Reshape on the summary; Conv, Pad, Concat, Slice, Add): no custom
    autograd Function, no in-place writes into slices, no index table.

    * stage 1: ``Z = conv1x1(x, W)`` with ``W`` the summary's
      :func:`summary_weight_tiled` (equal to :func:`summary_weight`); with
      zero padding only over the input rows / columns the taps read;
    * ``Z`` is padded by ``F.pad`` (``'zeros'``: a constant pad of the border
      the taps read; another mode as ``nn.Conv2d`` pads the input, which
      commutes with a 1x1 conv), viewed as (N, K1, x, K2, y, K3, Hz, Wz);
    * the roll of tap ``(u, v)`` (summary rows ``(k1 x + u) mod Hm``: Z's row
      block ``u mod x`` rolled by ``u // x`` along K1, :func:`_shift_plan`;
      likewise for columns) is one slice of Z extended circularly: Z with
      its first ``max_u (u // x mod K1)`` K1-blocks appended (one
      ``torch.cat`` of two slices per axis, per call), so block
      ``a = u // x mod K1`` of the roll is ``[a, a + K1)``;
    * stage 2: the output (N, K1, 1, K2, 1, K3, Ho, Wo) is the Python sum
      over the taps of one slice each: K1 / K2 blocks as above, row block
      ``u mod x``, column block ``v mod y``, and the spatial positions
      ``u * dilation + stride * i`` (a strided slice);
    * the interleave permutation (reshape, transpose), then the bias.

    Half-precision inputs are summed in float32, as :func:`summary_conv2d`.
    Differentiable by autograd (a full-size term per tap: slower to train
    through than :func:`summary_conv2d`). In a trace, H and W are constants
    (the batch size stays dynamic).

    Args: as :func:`summary_conv2d`.

    Returns:
        (N, K, Ho, Wo) output ((K, Ho, Wo) for an unbatched input).
    """
    if x.dim() == 3:
        return summary_conv2d_unrolled(x.unsqueeze(0), summary, geometry, bias,
                                       stride, padding, dilation,
                                       padding_mode).squeeze(0)
    if tuple(summary.shape) != tuple(geometry.summary_shape):
        raise ValueError(f'summary has shape {tuple(summary.shape)}, the '
                         f'geometry {geometry.summary_shape}')
    stride, dilation = _pair('stride', stride), _pair('dilation', dilation)
    in_hw = tuple(int(s) for s in x.shape[-2:])  # constants in a trace
    layout = _layout(geometry, in_hw, stride, padding, dilation, padding_mode)
    pads, (ho, wo) = layout.pads, layout.out_hw
    extent = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(
        layout.out_hw, stride, dilation, geometry.kernel_size)]
    if padding_mode == 'zeros':  # the input the taps read, the zeros they read
        used = layout.stage1_hw
        if used != in_hw:
            x = x[..., :used[0], :used[1]]
        pads = tuple((lo, max(0, e - lo - n))
                     for (lo, _), e, n in zip(pads, extent, used))
    z = F.conv2d(x, summary_weight_tiled(summary, geometry))
    dtype = z.dtype
    if _accumulator(dtype) != dtype:
        z = z.to(_accumulator(dtype))
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        z = F.pad(z, (left, right, top, bottom),
                  mode='constant' if padding_mode == 'zeros' else padding_mode)
    rows_in, cols_in = layout.stage1_hw if padding_mode == 'zeros' else in_hw
    hz, wz = rows_in + top + bottom, cols_in + left + right  # Z's, padded
    (k1, k2, k3), (sx, sy, _) = geometry.sampling, geometry.strides
    (s1, s2), (st1, st2), (d1, d2) = geometry.kernel_size, stride, dilation
    z = z.reshape(-1, k1, sx, k2, sy, k3, hz, wz)
    roll1 = [(u // sx) % k1 for u in range(s1)]
    roll2 = [(v // sy) % k2 for v in range(s2)]
    if max(roll1):  # K1 blocks [a, a + K1) of the extension: roll by a
        z = torch.cat([z, z[:, :max(roll1)]], 1)
    if max(roll2):
        z = torch.cat([z, z[:, :, :, :max(roll2)]], 3)
    n1, n2 = k1 + max(roll1), k2 + max(roll2)  # z.shape[1], z.shape[3]
    out = None
    for u in range(s1):
        rows = _span(u * d1, u * d1 + (ho - 1) * st1 + 1, hz, st1)
        for v in range(s2):
            cols = _span(v * d2, v * d2 + (wo - 1) * st2 + 1, wz, st2)
            tap = z[:, _span(roll1[u], roll1[u] + k1, n1),
                    _span(u % sx, u % sx + 1, sx),
                    _span(roll2[v], roll2[v] + k2, n2),
                    _span(v % sy, v % sy + 1, sy), :, rows, cols]
            out = tap if out is None else out + tap
    out = out.reshape(-1, k1 * k2 * k3, ho, wo)
    if out.dtype != dtype:
        out = out.to(dtype)
    g = geometry.interleave
    if g > 1:  # output a * g + c is grid filter c * (K / g) + a
        out = out.reshape(-1, g, k1 * k2 * k3 // g, ho, wo).transpose(
            1, 2).reshape(-1, k1 * k2 * k3, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
