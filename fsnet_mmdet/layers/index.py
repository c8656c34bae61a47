"""Which summary element each weight element reads: the index.

Output channel ``k`` is filter ``(k1, k2, k3)`` with ``k = (k1 * K2 + k2) * K3 + k3``
(``interleave = 1``, the default). With ``interleave = g`` (dividing ``K``),
output channel ``k = a * g + c`` is the filter at grid position
``p = c * (K / g) + a``: channels ``k`` and ``k + g`` are neighbours in the
summary. For a detection predictor whose outputs come in per-anchor groups of
``g`` (4 box deltas; C + 1 class scores) this shares weights between the same
output of neighbouring anchors, not between the different outputs of one
anchor.

:func:`filter_index` is the 3D summary's index (paper Fig. 1),
:func:`segment_index` the 1D summary's (the later paper; FSLinear), and
:func:`multiplicity` / :func:`representatives` count and pick the weight
elements that read one summary element.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .geometry import FSGeometry


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


def multiplicity(index: Tensor, numel: int) -> Tensor:
    """How many filter elements read each summary element (Eq. 2 denominator).

    Args:
        index: (K, C, S1, S2) flat summary indices.
        numel: number of summary elements, Cm * Hm * Wm.

    Returns:
        Long tensor of shape (numel,).
    """
    return torch.bincount(index.reshape(-1).long(), minlength=numel)


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
