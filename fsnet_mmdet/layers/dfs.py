"""Differentiable FSNet (DFSNet): learned filter locations in the summary.

While a layer searches, every filter is the softmax-weighted sum of its
block at a few candidate locations (:func:`candidate_shifts`,
:func:`relaxed_filters`); after :meth:`DFSMixin.discretize`, each filter is
read at one shifted location (:func:`shift_index`) kept as an int8
``offsets`` table in the state dict.

Differentiable FSNet (``dfs_radius >= 1``): while searching, every filter is
the softmax-weighted sum of its block at a few candidate locations (its grid
location and the locations up to ``dfs_radius`` summary elements away along
each summary axis), weighted by learned logits (``dfs_logits``, shape (K, J))
at a temperature (``dfs_temperature``, annealed by
:class:`~fsnet_mmdet.engine.hooks.DFSSearchHook`). :meth:`discretize` then fixes
every filter at its most likely location: the layer becomes an ordinary FS
layer whose filters are moved from the grid by ``offsets``, a (K, ndim) int8
table kept in the state dict (any summary layer loading a state dict with
``offsets`` takes those locations).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .accounting import Storage, table_storage, tensor_storage
from .extraction import extract_filters
from .geometry import positive_int


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
    radius = positive_int('dfs_radius', radius)
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


class DFSMixin:
    """The DFSNet part of a summary layer (mixed into
    :class:`~fsnet_mmdet.layers.summary.SummaryWeightMixin`): the search's
    logits and candidates, :meth:`discretize`, the ``offsets`` table in state
    dicts. Every method reads the layer's ``summary`` and ``index``."""

    #: Softmax temperature of a searching DFSNet layer (DFSSearchHook sets it).
    dfs_temperature: float = 1.0

    def _init_dfs(self, shape, num_filters: int, dfs_radius: int,
                  dfs_prior: float, device=None, dtype=None) -> None:
        """Register the search's candidates and logits (``dfs_radius >= 1``).

        Raises:
            ValueError: ``dfs_radius`` is not an int >= 0, or ``dfs_prior``
                not a finite number.
        """
        if isinstance(dfs_radius, bool) or not isinstance(dfs_radius, int) or (
                dfs_radius < 0):
            raise ValueError(f'dfs_radius must be an int >= 0 (0: no DFSNet '
                             f'search), got {dfs_radius!r}')
        if not dfs_radius:
            return
        self.register_buffer('dfs_shifts', candidate_shifts(
            shape, dfs_radius).to(device), persistent=False)
        if isinstance(dfs_prior, bool) or not isinstance(
                dfs_prior, (int, float)) or not math.isfinite(dfs_prior):
            raise ValueError(f'dfs_prior must be a finite number (the '
                             f'initial logit of the grid location), got '
                             f'{dfs_prior!r}')
        logits = torch.zeros(num_filters, len(self.dfs_shifts), device=device,
                             dtype=dtype)
        logits[:, 0] = dfs_prior
        self.dfs_logits = nn.Parameter(logits)

    @property
    def searching(self) -> bool:
        """Whether the filters' locations are being learned (DFSNet)."""
        return 'dfs_logits' in self._parameters

    @property
    def offsets_shape(self) -> Tuple[int, int]:
        """Shape of the learned-location table: (filters, summary axes)."""
        return (self.index.shape[0], self.summary.dim())

    def moved_filters(self) -> int:
        """How many filters a discretized layer moved off their grid location."""
        return int(self.offsets.ne(0).any(1).sum())

    def dfs_probs(self) -> Tensor:
        """(K, J) softmax of ``dfs_logits / dfs_temperature`` over the candidates."""
        return torch.softmax(self.dfs_logits / self.dfs_temperature, dim=1)

    def _dfs_storage(self) -> Storage:
        """What DFSNet adds to the layer's storage: the search's logits
        while searching; after, the ``offsets`` table, one int8 per filter
        and summary axis (a byte counts a quarter parameter, as WQ's)."""
        if self.searching:
            return tensor_storage([self.dfs_logits])
        offsets = self._buffers.get('offsets')
        return Storage(0, 0) if offsets is None else table_storage(offsets)

    @torch.no_grad()
    def discretize(self, offsets: Optional[Tensor] = None) -> Tensor:
        """Fix every filter at one location; the layer is a plain FS layer after.

        Args:
            offsets: (K, ndim) shifts of the filters from their grid
                locations; default: while searching, each filter's most
                likely candidate (argmax of ``dfs_logits``).

        Returns:
            The (K, ndim) int8 ``offsets`` now in use (a state-dict buffer).
            ``dfs_logits`` is removed from the layer.

        Raises:
            ValueError: no offsets given to a layer that is not searching, or
                offsets of the wrong shape.
        """
        self._write_back()
        shape = self.offsets_shape
        if offsets is None:
            if not self.searching:
                raise ValueError(
                    f'discretize() of a {type(self).__name__} that is not '
                    f'searching (built with dfs_radius=0 or already '
                    f'discretized) needs offsets of shape {shape}')
            offsets = self.dfs_shifts[self.dfs_logits.argmax(1)]
        if tuple(offsets.shape) != shape:
            raise ValueError(f'offsets must have shape (filters, summary axes) '
                             f'= {shape}, got {tuple(offsets.shape)} '
                             f'({self._layout()})')
        offsets = offsets.to(self.index.device, torch.int8)
        current = self._buffers.get('offsets')
        moved = offsets.long() - (0 if current is None else current.long())
        self._set_index(shift_index(self.index, self.summary.shape, moved),
                        fold=None)
        if self.searching:
            del self._parameters['dfs_logits']
            del self._buffers['dfs_shifts']
        self.register_buffer('offsets', offsets)
        return offsets

    def _dfs_repr(self) -> str:
        if self.searching:
            return f', dfs_candidates={len(self.dfs_shifts)}'
        if 'offsets' in self._buffers:
            return f', dfs_moved={self.moved_filters()}/{len(self.offsets)}'
        return ''

    def _load_dfs_state(self, state_dict: dict, prefix: str) -> None:
        """A checkpoint's learned locations (``offsets``) are taken before its
        summary loads; a search checkpoint into a non-searching layer fails."""
        if prefix + 'offsets' in state_dict:  # DFSNet's learned locations
            self.discretize(state_dict[prefix + 'offsets'])
        elif prefix + 'dfs_logits' in state_dict and not self.searching:
            raise ValueError(
                f'{prefix}dfs_logits: the checkpoint is from a DFSNet search '
                f'(not discretized); this {type(self).__name__} is not '
                f'searching: build it with the dfs_radius of that training')
