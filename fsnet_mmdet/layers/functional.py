"""Pure functions of the filter-summary (FS) convolution.

FSNet (Yang, Jojic, Huan, ICLR 2020) stores, per conv layer with ``K`` filters
of shape ``(C, S1, S2)``, one tensor, the *filter summary* ``M`` of shape
``(Cm, Hm, Wm) = (K3 * z, K1 * x, K2 * y)``; ``K = K1 * K2 * K3``. Filter
``(k1, k2, k3)`` is the block of ``M`` starting at ``(k3 * z, k1 * x, k2 * y)``
of size ``(C, S1, S2)``, read with circular wrap-around (the paper appends a
copy of ``M``; Fig. 1), so nearby filters share weights.

Names used throughout:

* **sampling numbers** ``(K1, K2, K3)``: filters along height, width, channels;
* **strides** ``(x, y, z)``: offsets between neighbouring filters in ``M``;
* **summary**: the learned tensor ``M``;
* **filters**: the ``(K, C, S1, S2)`` bank extracted from the summary;
* **multiplicity**: how many filter elements read one summary element.

Output channel ``k`` is filter ``(k1, k2, k3)`` with ``k = (k1 * K2 + k2) * K3 + k3``
(``interleave = 1``, the default). With ``interleave = g`` (dividing ``K``),
output channel ``k = a * g + c`` is the filter at grid position
``p = c * (K / g) + a``: channels ``k`` and ``k + g`` are neighbours in the
summary. For a detection predictor whose outputs come in per-anchor groups of
``g`` (4 box deltas; C + 1 class scores) this shares weights between the same
output of neighbouring anchors, not between the different outputs of one
anchor.

Choices the paper leaves open, each with one rule (documented in the README):

* ``K3`` for a spatial kernel: the paper's Table 1 value of the largest listed
  filter count not above ``K`` (1 below 12), lowered to the largest divisor of
  ``gcd(K, C)`` not above it, so that ``Cm = C`` exactly (``z = C / K3``);
  e.g. 1024 -> 8, 84 -> 4, 126 filters on 1024 channels -> 2, C = 3 -> 1.
* ``K1 x K2 = K / K3`` is factored as squarely as possible with ``K1 <= K2``.
* Spatial strides default to ``ceil(S / 2)`` (2 for 3x3, as in the paper; 1 for 1x1),
  except along a spatial axis with a single filter (``K1 = 1`` or ``K2 = 1``,
  e.g. a head predictor with a prime K / K3), whose stride is the filter size:
  there half a stride would tie the filter's first and last rows (columns)
  to one summary row, a wrap of the filter onto itself that shares nothing
  between filters (``self_wrap=True`` keeps ``ceil(S / 2)`` there).
* A 1x1 layer takes ``(1, 1, K)`` and ``z = C / pointwise_ratio`` (default
  ratio 8: ``Cm = K * C / 8``); the default ratio is lowered to the largest
  divisor of ``C`` not above 8 when 8 does not divide ``C``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

#: Paper Table 1: channel sampling number K3 by number of filters K.
TABLE1_K3 = {12: 2, 16: 4, 32: 2, 64: 4, 128: 4, 256: 4, 512: 8}

#: K3 tables by number of filters. ``'paper'`` is Table 1; ``'fsnet1'`` and
#: ``'fsnet2'`` are the SSD300 presets of this project (the paper does not list
#: its per-layer settings), chosen so that FSNet SSD300 lands on the paper's
#: Table 4 parameter counts (1.67M and 2.59M): FSNet-1 doubles Table 1's K3 for
#: 128 and 512 filters and uses K3 = 8 for the 16/24-filter box regressors;
#: FSNet-2 halves K3 for 64 and 128 filters and for fc6 (1024 filters, 8 by
#: our rule) and uses K3 = 2 throughout the head.
#: Entries are caps: K3 is lowered to a common divisor of K and C.
K3_PRESETS = {
    'paper': TABLE1_K3,
    'fsnet1': {16: 8, 24: 8, 64: 4, 84: 4, 126: 2, 128: 8, 256: 4, 512: 16,
               1024: 8},
    'fsnet2': {16: 2, 24: 2, 64: 2, 84: 2, 126: 2, 128: 2, 256: 4, 512: 8,
               1024: 4},
}

#: The paper compresses every 1x1 layer 8x.
DEFAULT_POINTWISE_RATIO = 8

GRAD_REDUCTIONS = ('mean', 'sum')
#: Default compression of a 1D summary (rows of length N, offset N / 8),
#: as a 1x1 conv's: :func:`segment_stride`.
DEFAULT_SEGMENT_RATIO = 8


def _divisors(n: int) -> list:
    return [d for d in range(1, n + 1) if n % d == 0]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int, got {value!r}')
    return value


def _positive_scale(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value < math.inf):
        raise ValueError(f'{name} must be a positive finite number, got '
                         f'{value!r}')
    return float(value)


def _triple(name: str, value) -> Tuple[int, int, int]:
    if not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f'{name} must be a sequence of three positive ints, '
                         f'got {value!r}')
    return tuple(_positive_int(f'{name}[{i}]', v) for i, v in enumerate(value))


def default_k3(num_filters: int, in_channels: int,
               preset: str = 'paper', k3_scale: float = 1.0) -> int:
    """Channel sampling number K3 for a spatial (non-1x1) kernel.

    Table 1 of the paper (``preset='paper'``) gives K3 for 12, 16, 32, 64, 128,
    256 and 512 filters; any other count takes the value of the largest listed
    count not above it (1 below 12). The SSD300 presets ``'fsnet1'`` and
    ``'fsnet2'`` list every filter count of SSD300 and reject others. The
    value is then lowered to the largest divisor of ``gcd(num_filters,
    in_channels)`` not above it, so that ``K3`` divides ``K`` and the summary
    keeps ``Cm = C`` channels.

    Args:
        num_filters: K, the layer's output channels.
        in_channels: C, the filters' channel size.
        preset: a key of :data:`K3_PRESETS`.
        k3_scale: multiplies the preset's value before it is lowered (rounded,
            at least 1): a model-wide compression knob; Eq. 1 makes a 3x3
            layer's ratio proportional to K3.

    Returns:
        K3, a common divisor of ``num_filters`` and ``in_channels``.
    """
    if preset not in K3_PRESETS:
        raise ValueError(f'preset={preset!r} is unknown; allowed: '
                         f'{sorted(K3_PRESETS)}')
    table = K3_PRESETS[preset]
    if preset == 'paper':
        listed = [n for n in table if n <= num_filters]
        cap = table[max(listed)] if listed else 1
    elif num_filters in table:
        cap = table[num_filters]
    else:
        raise ValueError(
            f'preset={preset!r} has no K3 for a layer with {num_filters} '
            f'filters; it lists {sorted(table)}. Give this layer k3= or '
            f"sampling= explicitly, or use preset='paper'")
    cap = max(1, round(cap * _positive_scale('k3_scale', k3_scale)))
    common = math.gcd(num_filters, in_channels)
    return max(d for d in _divisors(common) if d <= cap)


def square_factors(n: int) -> Tuple[int, int]:
    """Factor ``n = a * b`` with ``a <= b`` and ``a`` as large as possible."""
    a = max(d for d in _divisors(n) if d * d <= n)
    return a, n // a


@dataclass(frozen=True)
class FSGeometry:
    """Shapes of one FS layer (paper Sec. 2).

    Attributes:
        in_channels: C.
        kernel_size: (S1, S2).
        sampling: (K1, K2, K3) with ``K1 * K2 * K3 = K``.
        strides: (x, y, z).
        interleave: g; output channel ``a * g + c`` is the filter at grid
            position ``c * (K / g) + a`` (1: the grid order).
    """

    in_channels: int
    kernel_size: Tuple[int, int]
    sampling: Tuple[int, int, int]
    strides: Tuple[int, int, int]
    interleave: int = 1

    @property
    def num_filters(self) -> int:
        return math.prod(self.sampling)

    @property
    def filter_shape(self) -> Tuple[int, int, int, int]:
        """(K, C, S1, S2), the dense weight shape."""
        return (self.num_filters, self.in_channels, *self.kernel_size)

    @property
    def summary_shape(self) -> Tuple[int, int, int]:
        """(Cm, Hm, Wm) = (K3 * z, K1 * x, K2 * y)."""
        (k1, k2, k3), (x, y, z) = self.sampling, self.strides
        return (k3 * z, k1 * x, k2 * y)

    @property
    def ratio(self) -> float:
        """Dense weight elements per summary element (Eq. 1)."""
        return math.prod(self.filter_shape) / math.prod(self.summary_shape)


def resolve_geometry(in_channels: int,
                     out_channels: int,
                     kernel_size: Tuple[int, int],
                     sampling: Optional[Sequence[int]] = None,
                     k3: Optional[int] = None,
                     strides: Optional[Sequence[int]] = None,
                     pointwise_ratio: Optional[int] = None,
                     preset: str = 'paper',
                     k3_scale: float = 1.0,
                     self_wrap: bool = False,
                     interleave: int = 1) -> FSGeometry:
    """Resolve a layer's sampling numbers and strides from its options.

    Every argument after ``kernel_size`` overrides one default (see the module
    docstring for the defaults). Invalid values raise ``ValueError`` naming the
    parameter and the allowed values.

    Args:
        in_channels: C.
        out_channels: K.
        kernel_size: (S1, S2).
        sampling: (K1, K2, K3), product K. Excludes ``k3``.
        k3: K3 only; K1 x K2 = K / K3 is factored squarely.
        strides: (x, y, z); ``x <= S1``, ``y <= S2``, ``z <= C`` so that every
            summary element is used by some filter.
        pointwise_ratio: compression of a 1x1 layer, ``C / z``; must divide C.
        preset: K3 table for spatial kernels, a key of :data:`K3_PRESETS`.
        k3_scale: multiplies the preset's K3 (see :func:`default_k3`).
        self_wrap: keep the default spatial stride ``ceil(S / 2)`` also along
            an axis with a single filter, which then wraps onto itself.
        interleave: g, dividing K: output channels ``k`` and ``k + g`` are
            neighbouring filters in the summary (module docstring).

    Returns:
        The layer's FSGeometry.
    """
    c = _positive_int('in_channels', in_channels)
    k = _positive_int('out_channels', out_channels)
    s1, s2 = (_positive_int(f'kernel_size[{i}]', s)
              for i, s in enumerate(kernel_size))
    pointwise = (s1, s2) == (1, 1)
    g = _positive_int('interleave', interleave)
    if k % g:
        raise ValueError(f'interleave={g} must divide out_channels={k}; '
                         f'allowed: {_divisors(k)}')
    if preset not in K3_PRESETS:
        raise ValueError(f'preset={preset!r} is unknown; allowed: '
                         f'{sorted(K3_PRESETS)}')
    if sampling is not None and k3 is not None:
        raise ValueError('give either sampling=(K1, K2, K3) or k3, not both')
    if pointwise_ratio is not None and not pointwise:
        raise ValueError(f'pointwise_ratio applies to 1x1 layers only; this '
                         f'layer has kernel_size={(s1, s2)} (set k3 or '
                         f'strides instead)')

    if sampling is not None:
        sampling = _triple('sampling', sampling)
        if math.prod(sampling) != k:
            raise ValueError(
                f'sampling={sampling}: K1 * K2 * K3 must equal the number of '
                f'filters out_channels={k}, got {math.prod(sampling)}')
    elif k3 is not None or not pointwise:
        if k3 is None:
            k3 = default_k3(k, c, preset, k3_scale)
        elif k % _positive_int('k3', k3):
            raise ValueError(f'k3={k3} must divide out_channels={k}; allowed: '
                             f'{_divisors(k)}')
        sampling = (*square_factors(k // k3), k3)
    else:
        sampling = (1, 1, k)

    if strides is not None:
        strides = _triple('strides', strides)
    else:
        if pointwise and sampling[:2] == (1, 1):
            if pointwise_ratio is None:
                ratio = max(d for d in _divisors(c)
                            if d <= DEFAULT_POINTWISE_RATIO)
            else:
                ratio = _positive_int('pointwise_ratio', pointwise_ratio)
                if c % ratio:
                    raise ValueError(
                        f'pointwise_ratio={ratio} must divide in_channels={c}; '
                        f'allowed: {_divisors(c)}')
            z = c // ratio
        else:
            if c % sampling[2]:
                raise ValueError(
                    f'K3={sampling[2]} must divide in_channels={c} so that the '
                    f'summary has C channels (z = C / K3); allowed K3: '
                    f'{_divisors(math.gcd(c, k))}, or give '
                    f'strides=(x, y, z) explicitly')
            z = c // sampling[2]
        # Half the filter (the paper's 2 for 3x3) between neighbouring
        # filters; an axis with a single filter has no neighbour to share
        # with, and half a stride would wrap the filter onto itself (rows 0
        # and 2 of a 3x3 filter would be one summary row).
        x = s1 if sampling[0] == 1 and not self_wrap else math.ceil(s1 / 2)
        y = s2 if sampling[1] == 1 and not self_wrap else math.ceil(s2 / 2)
        strides = (x, y, z)

    x, y, z = strides
    for name, stride, size in (('x', x, s1), ('y', y, s2), ('z', z, c)):
        if stride > size:
            raise ValueError(
                f'strides: {name}={stride} exceeds the filter size {size} '
                f'along it, which would leave summary elements unused; '
                f'allowed: 1..{size}')
    return FSGeometry(c, (s1, s2), sampling, strides, g)


def interleave_order(num_filters: int, interleave: int) -> Tensor:
    """Grid position of the filter of every output channel.

    Args:
        num_filters: K.
        interleave: g, dividing K.

    Returns:
        Long tensor (K,): entry ``a * g + c`` is ``c * (K / g) + a``, so
        output channels k and k + g are grid neighbours (the identity for g = 1).
    """
    return torch.arange(num_filters).view(interleave, -1).t().reshape(-1)


def filter_index(geometry: FSGeometry) -> Tensor:
    """Flat summary index of every filter element (the paper's mapping T).

    ``filters = summary.reshape(-1)[filter_index(g)]``.

    Args:
        geometry: the layer's FSGeometry.

    Returns:
        Integer (int32) tensor of shape (K, C, S1, S2); entry ``(k, c, s1, s2)`` of filter
        ``k = (k1 * K2 + k2) * K3 + k3`` is the flat index of summary element
        ``((k3 z + c) mod Cm, (k1 x + s1) mod Hm, (k2 y + s2) mod Wm)``;
        with ``interleave = g`` row ``a * g + c`` is that of grid filter
        ``c * (K / g) + a``.
    """
    (k1, k2, k3), (x, y, z) = geometry.sampling, geometry.strides
    cm, hm, wm = geometry.summary_shape
    c, (s1, s2) = geometry.in_channels, geometry.kernel_size
    ar = torch.arange
    # Broadcast over (K1, K2, K3, C, S1, S2).
    chan = (ar(k3).view(1, 1, k3, 1, 1, 1) * z + ar(c).view(1, 1, 1, c, 1, 1)) % cm
    row = (ar(k1).view(k1, 1, 1, 1, 1, 1) * x + ar(s1).view(1, 1, 1, 1, s1, 1)) % hm
    col = (ar(k2).view(1, k2, 1, 1, 1, 1) * y + ar(s2).view(1, 1, 1, 1, 1, s2)) % wm
    index = ((chan * hm + row) * wm + col).reshape(geometry.filter_shape)
    index = index[interleave_order(geometry.num_filters, geometry.interleave)]
    # int32 halves the buffer and the gather's index traffic.
    dtype = torch.int32 if cm * hm * wm < 2**31 else torch.long
    return index.to(dtype).contiguous()


def segment_stride(row_length: int, ratio: float = DEFAULT_SEGMENT_RATIO,
                   stride: Optional[int] = None) -> int:
    """Offset between neighbouring rows in a 1D summary.

    Args:
        row_length: N, the length of a row (a linear layer's ``in_features``).
        ratio: wanted compression N / s (>= 1); the stride is
            ``ceil(N / ratio)``, so the compression is at most ``ratio``.
        stride: an explicit stride s, 1 <= s <= N, instead of ``ratio``.

    Returns:
        The stride s.

    Raises:
        ValueError: ``ratio`` below 1 or not a finite number; ``stride`` not an
            int in [1, N].
    """
    row_length = _positive_int('in_features', row_length)
    if stride is not None:
        if _positive_int('stride', stride) > row_length:
            raise ValueError(f'stride must be an int in [1, in_features = '
                             f'{row_length}], got {stride}')
        return stride
    if _positive_scale('ratio', ratio) < 1:
        raise ValueError(f'ratio must be >= 1 (N / stride), got {ratio!r}')
    return math.ceil(row_length / ratio)


def segment_index(num_rows: int, row_length: int, stride: int) -> Tensor:
    """Flat index of every weight element in a 1D summary (the later paper's layout).

    Row k of a (K, N) weight is the length-N segment of the summary ``f``
    (length ``L = K * s``) that starts at ``k * s``, read with circular
    wrap-around: ``weight[k, j] = f[(k * s + j) mod L]``. Neighbouring rows
    share ``N - s`` weights; every summary element is read, ``N / s`` times
    when s divides N, so the compression is ``K N / L = N / s``. With fewer
    rows than ``N / s`` a row wraps onto itself (it is periodic).

    Args:
        num_rows: K, the number of rows (``out_features``).
        row_length: N, the length of a row (``in_features``).
        stride: s, 1 <= s <= N (:func:`segment_stride`).

    Returns:
        Integer (int32) tensor of shape (K, N).
    """
    length = num_rows * stride
    index = (torch.arange(num_rows).view(-1, 1) * stride +
             torch.arange(row_length).view(1, -1)) % length
    dtype = torch.int32 if length < 2**31 else torch.long
    return index.to(dtype).contiguous()


def candidate_shifts(summary_shape: Sequence[int], radius: int) -> Tensor:
    """Candidate filter locations of Differentiable FSNet, as shifts.

    DFSNet (the later FSNet paper; design of this project, docs/dfsnet.md)
    lets each filter choose its block among its grid location and the
    locations ``d = 1 .. radius`` summary elements away from it along each
    summary axis, in both directions. Shifts that coincide modulo the
    summary's size along an axis (or are 0 there) are listed once.

    Args:
        summary_shape: the summary's shape, e.g. (Cm, Hm, Wm) or (L,).
        radius: the largest shift along an axis, >= 1.

    Returns:
        Long tensor (J, ndim): row 0 is the grid location (all zeros), each
        other row a shift along one axis.
    """
    radius = _positive_int('dfs_radius', radius)
    rows, seen = [[0] * len(summary_shape)], set()
    for axis, size in enumerate(summary_shape):
        for d in range(1, radius + 1):
            for signed in (d, -d):
                key = (axis, signed % size)
                if key[1] and key not in seen:
                    seen.add(key)
                    row = [0] * len(summary_shape)
                    row[axis] = signed
                    rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


def shift_index(index: Tensor, summary_shape: Sequence[int],
                offsets: Tensor) -> Tensor:
    """Move every filter's block by its own offset, circularly.

    Args:
        index: (K, ...) flat summary indices of each filter's elements.
        summary_shape: the summary's shape (ndim axes).
        offsets: (K, ndim) or (ndim,) integer offsets along each summary axis.

    Returns:
        Index of ``index``'s shape and dtype: element ``t`` of filter ``k``
        reads the summary element ``offsets[k]`` further (mod the shape)
        than before.
    """
    shape = torch.tensor(summary_shape, device=index.device)
    coords = torch.stack(torch.unravel_index(index.long(), tuple(summary_shape)), -1)
    offsets = offsets.long().to(index.device).view(
        -1, *[1] * (index.dim() - 1), len(summary_shape))
    coords = (coords + offsets) % shape
    strides = torch.tensor([math.prod(summary_shape[i + 1:])
                            for i in range(len(summary_shape))],
                           device=index.device)
    return (coords * strides).sum(-1).to(index.dtype).contiguous()


def relaxed_filters(summary: Tensor, index: Tensor,
                    inv_multiplicity: Optional[Tensor], shifts: Tensor,
                    probs: Tensor) -> Tensor:
    """DFSNet's relaxed filters: a softmax-weighted sum of candidate blocks.

    ``filters[k] = sum_j probs[k, j] * B_j[k]``, where ``B_j[k]`` is filter
    k's block moved by ``shifts[j]`` (:func:`shift_index`). Each candidate
    bank is cut with :func:`extract_filters` from the summary rolled by its
    shift, so its backward is Eq. 2 for that bank (mean or sum); the
    gradient of ``probs`` is ``<dL/dfilters[k], B_j[k]>``.

    Args:
        summary: the summary, shape ``summary_shape``.
        index: (K, ...) flat grid indices (:func:`filter_index`).
        inv_multiplicity: reciprocal multiplicity of the grid index, or None
            for the gradient sum.
        shifts: (J, ndim) candidate shifts (:func:`candidate_shifts`).
        probs: (K, J) each filter's weights over its candidates.

    Returns:
        Filters of ``index``'s shape.
    """
    dims = tuple(range(summary.dim()))
    rolled = torch.stack([summary.roll([-s for s in shift], dims)
                          for shift in shifts.tolist()])
    n, j = summary.numel(), len(shifts)
    base = torch.arange(j, device=index.device).view(j, *[1] * index.dim()) * n
    inv = inv_multiplicity.repeat(j) if inv_multiplicity is not None else None
    blocks = extract_filters(rolled, index.unsqueeze(0) + base.to(index.dtype), inv)
    weights = probs.t().reshape(j, -1, *[1] * (index.dim() - 1))
    return (blocks * weights).sum(0)


def multiplicity(index: Tensor, numel: int) -> Tensor:
    """How many filter elements read each summary element (Eq. 2 denominator).

    Args:
        index: (K, C, S1, S2) flat summary indices.
        numel: number of summary elements, Cm * Hm * Wm.

    Returns:
        Long tensor of shape (numel,).
    """
    return torch.bincount(index.reshape(-1).long(), minlength=numel)


def foldable(geometry: FSGeometry) -> bool:
    """Whether :func:`fold_filter_grad` applies: C is a multiple of z.

    True for every default geometry (z = C / K3 for spatial kernels,
    z = C / ratio for 1x1 kernels) in grid order (``interleave = 1``).
    """
    return (geometry.in_channels % geometry.strides[2] == 0
            and geometry.interleave == 1)


def _wrap(t: Tensor, dim: int, size: int) -> Tensor:
    """Add the entries of ``t`` past ``size`` along ``dim`` circularly onto the first ones."""
    total = t.shape[dim]
    for start in range(size, total, size):
        n = min(size, total - start)
        t.narrow(dim, 0, n).add_(t.narrow(dim, start, n))
    return t.narrow(dim, 0, size)


def fold_filter_grad(grad_filters: Tensor, geometry: FSGeometry) -> Tensor:
    """Sum the filter gradients onto the summary (Eq. 2 numerator), by blocks.

    Same result as ``zeros(numel).index_add_(0, index, grad_filters)``, but
    with a few large strided additions instead of one scattered add per
    element (about 3x faster on SSD300's large layers). With ``C = q * z``,
    channel chunk ``r`` of filter ``k3`` lands on summary chunk
    ``(k3 + r) mod K3``; then each filter tap ``(s1, s2)`` lands on summary
    rows ``k1 * x + s1`` and columns ``k2 * y + s2``, wrapped circularly.

    Args:
        grad_filters: (K, C, S1, S2) gradient of the filters.
        geometry: the layer's geometry; :func:`foldable` must hold.

    Returns:
        (Cm, Hm, Wm) gradient of the summary (the sum, not yet the mean).
    """
    (k1, k2, k3), (x, y, z) = geometry.sampling, geometry.strides
    cm, hm, wm = geometry.summary_shape
    s1, s2 = geometry.kernel_size
    q = geometry.in_channels // z
    chunks = grad_filters.reshape(k1, k2, k3, q, z, s1, s2)
    chan = chunks[:, :, :, 0].clone()  # (K1, K2, K3, z, S1, S2)
    for r in range(1, q):
        shift, src = r % k3, chunks[:, :, :, r]
        if shift == 0:
            chan += src
        else:
            chan[:, :, shift:] += src[:, :, :k3 - shift]
            chan[:, :, :shift] += src[:, :, k3 - shift:]
    taps = chan.reshape(k1, k2, cm, s1, s2).permute(3, 4, 2, 0, 1).contiguous()
    hp, wp = max(hm, (k1 - 1) * x + s1), max(wm, (k2 - 1) * y + s2)
    out = grad_filters.new_zeros(cm, hp, wp)
    for i in range(s1):
        for j in range(s2):
            out[:, i:i + (k1 - 1) * x + 1:x, j:j + (k2 - 1) * y + 1:y] += taps[i, j]
    return _wrap(_wrap(out, 1, hm), 2, wm).contiguous()


def reduction_matrix(index: Tensor, row_weights: Tensor) -> Tensor:
    """Eq. 2 as a sparse matrix: ``grad_summary = R @ grad_filters.view(-1)``.

    Row ``j`` of R holds, at the columns ``t`` with ``T(t) = j``, the weight
    ``1 / multiplicity(j)`` (the paper's mean) or 1 (the sum). One sparse
    matrix-vector product does the scatter and the scaling in one pass: on
    CPU 1.4-3x faster than ``index_add_`` followed by the scaling, for the
    0.01-1M-element banks it serves (below the fold's threshold).

    Args:
        index: (K, C, S1, S2) flat summary indices.
        row_weights: (numel,) the weight of each summary element's row:
            ``inv_multiplicity`` for the mean, ones for the sum.

    Returns:
        (numel, index.numel()) sparse CSR tensor with int32 indices, of
        ``row_weights``' dtype and device.
    """
    numel, flat = row_weights.numel(), index.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    crow = flat.new_zeros(numel + 1)
    crow[1:] = multiplicity(index, numel).cumsum(0)
    values = row_weights[flat[order]]
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(
            crow.to(torch.int32), order.to(torch.int32), values,
            size=(numel, flat.numel()), check_invariants=False)


class _ExtractFilters(torch.autograd.Function):
    """Gather the filters from the summary; backward per Eq. 2."""

    @staticmethod
    def forward(ctx, summary: Tensor, index: Tensor,
                inv_multiplicity: Optional[Tensor],
                geometry: Optional[FSGeometry],
                reduction: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(index, inv_multiplicity)
        ctx.summary_shape = summary.shape
        ctx.geometry, ctx.reduction = geometry, reduction
        flat = index.reshape(-1)
        return summary.reshape(-1).index_select(0, flat).view(index.shape)

    @staticmethod
    def backward(ctx, grad_filters: Tensor):
        index, inv_multiplicity = ctx.saved_tensors
        if ctx.reduction is not None:  # sum and mean in one product
            grad = ctx.reduction @ grad_filters.reshape(-1)
            return grad.view(ctx.summary_shape), None, None, None, None
        if ctx.geometry is not None:
            grad = fold_filter_grad(grad_filters, ctx.geometry).view(-1)
        else:
            grad = grad_filters.new_zeros(math.prod(ctx.summary_shape))
            grad.index_add_(0, index.reshape(-1), grad_filters.reshape(-1))
        if inv_multiplicity is not None:
            grad.mul_(inv_multiplicity)
        return grad.view(ctx.summary_shape), None, None, None, None


def extract_filters(summary: Tensor, index: Tensor,
                    inv_multiplicity: Optional[Tensor] = None,
                    fold: Optional[FSGeometry] = None,
                    reduction: Optional[Tensor] = None) -> Tensor:
    """Extract the filter bank from a summary (Algorithm 1).

    Forward: ``filters[t] = summary[T(t)]``. Backward (Eq. 2): the gradient of a
    summary element ``j`` is the sum of the filter gradients over ``T(t) = j``,
    divided by the multiplicity of ``j`` when ``inv_multiplicity`` is given
    (the paper's average); without it, the plain sum.

    Args:
        summary: (Cm, Hm, Wm) filter summary.
        index: (K, C, S1, S2) flat summary indices from :func:`filter_index`.
        inv_multiplicity: (Cm * Hm * Wm,) reciprocal of :func:`multiplicity`,
            of the summary's dtype, or None for the sum.
        fold: the layer's geometry to reduce the gradient with
            :func:`fold_filter_grad` (requires :func:`foldable`), or None
            for a scattered ``index_add_``. Same result; the fold is faster
            for large layers, the scatter for small ones.
        reduction: :func:`reduction_matrix` of ``index`` and the same
            ``inv_multiplicity``, of the gradient's dtype and device: the
            backward is then one sparse product (``fold`` is not used).

    Returns:
        (K, C, S1, S2) filters.
    """
    return _ExtractFilters.apply(summary, index, inv_multiplicity, fold,
                                 reduction)


def project_filters(filters: Tensor, index: Tensor, numel: int) -> Tensor:
    """The summary whose filters are closest to ``filters`` (least squares).

    Minimizes ``sum_t (M[T(t)] - W[t])^2`` over the summary ``M``: each
    summary element reads into the filters alone, so the solution is, for every
    summary element, the mean of the dense weights that map to it. Used to
    start an FS layer from a trained dense one.

    Args:
        filters: (K, C, S1, S2) dense weights W.
        index: (K, C, S1, S2) flat summary indices from :func:`filter_index`.
        numel: number of summary elements.

    Returns:
        Flat (numel,) summary of the filters' dtype.
    """
    flat = filters.reshape(-1)
    sums = flat.new_zeros(numel).index_add_(0, index.reshape(-1).long(), flat)
    # An element no filter reads (possible after DFSNet moved filters) is 0.
    return sums / multiplicity(index, numel).clamp(min=1).to(flat.dtype)


def representatives(index: Tensor, numel: int) -> Tensor:
    """For each summary element, the first filter element that reads it.

    Used to write a dense (K, C, S1, S2) tensor back onto the summary, e.g.
    after an in-place initializer: ``summary = dense.reshape(-1)[rep]``. Picks
    one independent draw per summary element, so the extracted filters keep
    the distribution of the dense initializer.

    Args:
        index: (K, C, S1, S2) flat summary indices.
        numel: number of summary elements.

    Returns:
        Long tensor of shape (numel,) of flat filter positions; an element no
        filter reads gets ``index.numel()``.
    """
    flat = index.reshape(-1).long()
    positions = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((numel,), flat.numel(), dtype=torch.long,
                       device=flat.device)
    return first.scatter_reduce_(0, flat, positions, reduce='amin')
