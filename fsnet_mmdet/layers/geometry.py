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
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple


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


#: Default compression of a 1D summary (rows of length N, offset N / 8),
#: as a 1x1 conv's: :func:`segment_stride`.
DEFAULT_SEGMENT_RATIO = 8


def _divisors(n: int) -> list:
    return [d for d in range(1, n + 1) if n % d == 0]


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int, got {value!r}')
    return value


def positive_scale(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value < math.inf):
        raise ValueError(f'{name} must be a positive finite number, got '
                         f'{value!r}')
    return float(value)


def int_triple(name: str, value) -> Tuple[int, int, int]:
    if not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f'{name} must be a sequence of three positive ints, '
                         f'got {value!r}')
    return tuple(positive_int(f'{name}[{i}]', v) for i, v in enumerate(value))


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
    cap = max(1, round(cap * positive_scale('k3_scale', k3_scale)))
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
    c = positive_int('in_channels', in_channels)
    k = positive_int('out_channels', out_channels)
    s1, s2 = (positive_int(f'kernel_size[{i}]', s)
              for i, s in enumerate(kernel_size))
    pointwise = (s1, s2) == (1, 1)
    g = positive_int('interleave', interleave)
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
        sampling = int_triple('sampling', sampling)
        if math.prod(sampling) != k:
            raise ValueError(
                f'sampling={sampling}: K1 * K2 * K3 must equal the number of '
                f'filters out_channels={k}, got {math.prod(sampling)}')
    elif k3 is not None or not pointwise:
        if k3 is None:
            k3 = default_k3(k, c, preset, k3_scale)
        elif k % positive_int('k3', k3):
            raise ValueError(f'k3={k3} must divide out_channels={k}; allowed: '
                             f'{_divisors(k)}')
        sampling = (*square_factors(k // k3), k3)
    else:
        sampling = (1, 1, k)

    if strides is not None:
        strides = int_triple('strides', strides)
    else:
        if pointwise and sampling[:2] == (1, 1):
            if pointwise_ratio is None:
                ratio = max(d for d in _divisors(c)
                            if d <= DEFAULT_POINTWISE_RATIO)
            else:
                ratio = positive_int('pointwise_ratio', pointwise_ratio)
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
    row_length = positive_int('in_features', row_length)
    if stride is not None:
        if positive_int('stride', stride) > row_length:
            raise ValueError(f'stride must be an int in [1, in_features = '
                             f'{row_length}], got {stride}')
        return stride
    if positive_scale('ratio', ratio) < 1:
        raise ValueError(f'ratio must be >= 1 (N / stride), got {ratio!r}')
    return math.ceil(row_length / ratio)
