"""What every filter-summary layer shares: a summary in place of the weight.

:class:`SummaryWeightMixin` turns an ``nn.Conv2d`` or ``nn.Linear`` subclass
into a layer that stores one learned tensor, the summary, and an integer
``index`` of the weight's shape that reads every weight element from it:
``weight = summary.reshape(-1)[index]``. The mixin gives the layer the dense
module's interface on top (a ``weight`` that initializers can write into,
state dicts that hold the summary, the eval-mode cache, WQ on load); the layer
class builds the index (:func:`~fsnet_mmdet.layers.index.filter_index` for the
3D summary of convs, :func:`~fsnet_mmdet.layers.index.segment_index` for the 1D
summary) and runs its own forward with :meth:`_forward_weight`.

Differentiable FSNet (learned filter locations) is :class:`~.dfs.DFSMixin`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from .accounting import Storage, StoredLayer, tensor_storage
from .derived_weight import DerivedWeightMixin
from .dfs import DFSMixin, relaxed_filters
from .extraction import (GRAD_REDUCTIONS, extract_filters, project_filters,
                         reduction_matrix)
from .geometry import FSGeometry
from .index import multiplicity, representatives
from .wq import fake_quantize


def error_norms(summary: Tensor, index: Tensor,
                dense_weight: Tensor) -> Tuple[float, float]:
    """``(||W||, ||W - summary[index]||)``: a dense weight W and how far the
    summary's weight is from it."""
    with torch.no_grad():
        weight = summary.reshape(-1)[index.long()]
        dense_weight = dense_weight.to(weight.dtype)
        return float(dense_weight.norm()), float((weight - dense_weight).norm())


def relative_error(summary: Tensor, index: Tensor, dense_weight: Tensor) -> float:
    """``||W - summary[index]|| / ||W||`` (NaN for W = 0)."""
    dense, error = error_norms(summary, index, dense_weight)
    return error / dense if dense else float('nan')


def check_grad_reduction(grad_reduction: str) -> str:
    if grad_reduction not in GRAD_REDUCTIONS:
        raise ValueError(f'grad_reduction must be one of {GRAD_REDUCTIONS}, '
                         f'got {grad_reduction!r}')
    return grad_reduction


class SummaryWeightMixin(DFSMixin, DerivedWeightMixin, StoredLayer):
    """A weight read from a summary by index; mixed in before the dense module.

    Initialization: ``weight`` returns a dense materialization of the weight,
    detached; an in-place write to it (``nn.init.*_``, MMEngine's
    ``init_cfg`` initializers, mmcv's kaiming init) is written back onto the
    summary as soon as any parameter, buffer or ``weight`` of the layer is
    read again (initializers read ``bias`` next), and before forward,
    ``state_dict`` and ``load_state_dict``, taking for each summary element
    the value drawn for the first weight element that reads it. The extracted
    weight therefore has exactly the distribution the initializer would give
    the dense layer. The differentiable weight is :meth:`filters`.
    """

    summary: nn.Parameter
    index: Tensor
    inv_multiplicity: Tensor

    def _init_summary(self, shape, index: Tensor, bias_features: Optional[int],
                      grad_reduction: str, wq: bool,
                      fold: Optional[FSGeometry] = None, dfs_radius: int = 0,
                      dfs_prior: float = 0.0, device=None, dtype=None) -> None:
        """Register the summary, the bias, the index and its multiplicity; init.

        Called by the layer's ``__init__`` after the dense module's, whose
        ``weight`` it removes (create that one on the meta device).

        Args:
            shape: the summary's shape.
            index: integer tensor of the weight's shape, flat summary indices.
            bias_features: length of the bias, or None for no bias.
            grad_reduction: ``'mean'`` (Eq. 2) or ``'sum'``.
            wq: quantize every summary loaded from a checkpoint to 8 bits.
            fold: a geometry for :func:`fold_filter_grad`, or None.
            dfs_radius: 0, or search each filter's location (DFSNet) among
                the shifts up to this radius (:func:`candidate_shifts`).
            dfs_prior: initial logit of every filter's grid location (the
                other candidates start at 0).
        """
        del self._parameters['weight']
        self.grad_reduction = check_grad_reduction(grad_reduction)
        self.wq = bool(wq)
        factory = dict(device=device, dtype=dtype)
        self.summary = nn.Parameter(torch.empty(shape, **factory))
        if bias_features is not None:
            self.bias = nn.Parameter(torch.empty(bias_features, **factory))
        # Derived from the layer's options: never saved in a checkpoint.
        self.register_buffer('index', None, persistent=False)
        self.register_buffer('inv_multiplicity', None, persistent=False)
        self._set_index(index.to(device), fold)
        self._eval_cache = None  # (weight, summary key) in eval mode
        self._init_dfs(shape, index.shape[0], dfs_radius, dfs_prior, **factory)
        self.reset_parameters()

    def _set_index(self, index: Tensor, fold: Optional[FSGeometry]) -> None:
        """Use ``index``: its multiplicity, the gradient fold, no stale cache."""
        count = multiplicity(index, self.summary.numel())
        self.index = index
        # An element no filter reads (DFSNet may leave some) gets no gradient.
        self.inv_multiplicity = 1.0 / count.clamp(min=1).to(self.summary.dtype)
        self._fold = fold
        self._eval_cache = None
        self._reduction_cache = None  # (sparse Eq. 2 matrix, key) for training

    def storage(self) -> Storage:
        """The summary and bias, and DFSNet's logits or location table."""
        own = tensor_storage([self.summary] + (
            [self.bias] if self.bias is not None else []))
        return Storage(own.params, own.bits,
                       self.summary.numel()) + self._dfs_storage()

    def _layout(self) -> str:
        """The options that set the summary's shape, for error messages."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """The dense module's default init, applied to the extracted weight."""
        if 'summary' not in self._parameters:
            return  # called from the dense __init__ before the summary exists
        super().reset_parameters()  # writes self.weight in place
        self._write_back()

    # ------------------------------------------------------------- weight
    def _detached_weight(self) -> Tensor:
        return self._gather()

    def _absorb_weight(self, dense: Tensor) -> None:
        """Each summary element: the value written to the first weight
        element that reads it."""
        rep = representatives(self.index, self.summary.numel())
        used = rep < self.index.numel()
        with torch.no_grad():
            self.summary.view(-1)[used] = dense.reshape(-1)[rep[used]]

    def filters(self) -> Tensor:
        """The weight, differentiable w.r.t. the summary (backward: Eq. 2)
        and, while searching (DFSNet), w.r.t. ``dfs_logits``."""
        self._write_back()
        inv = self.inv_multiplicity if self.grad_reduction == 'mean' else None
        if self.searching:
            return relaxed_filters(self.summary, self.index, inv,
                                   self.dfs_shifts, self.dfs_probs())
        return extract_filters(self.summary, self.index, inv, self._fold,
                               self._reduction(inv))

    def _reduction(self, inv: Optional[Tensor]) -> Optional[Tensor]:
        """The sparse Eq. 2 matrix of the backward, built once per index,
        dtype and device; None where the fold serves (large layers) or off
        CPU/CUDA (the scattered add serves)."""
        s = self.summary
        if (self._fold is not None or s.device.type not in ('cpu', 'cuda')
                or s.dtype not in (torch.float32, torch.float64)):
            return None
        key = (self.index.data_ptr(), s.device, s.dtype, inv is not None)
        if self._reduction_cache is None or self._reduction_cache[1] != key:
            weights = inv if inv is not None else torch.ones_like(
                self.inv_multiplicity)
            self._reduction_cache = (reduction_matrix(self.index, weights), key)
        return self._reduction_cache[0]

    def __getstate__(self) -> dict:
        # A sparse CSR tensor cannot be deep-copied or pickled: drop the
        # cache (EMA copies, torch.save of the module), it is rebuilt on use.
        return dict(super().__getstate__(), _reduction_cache=None)

    @torch.no_grad()
    def _gather(self) -> Tensor:
        """The weight, detached, from the current summary."""
        if self.searching:
            return relaxed_filters(self.summary, self.index, None,
                                   self.dfs_shifts, self.dfs_probs())
        return self.summary.reshape(-1).index_select(
            0, self.index.reshape(-1)).view(self.index.shape)

    def _eval_filters(self) -> Tensor:
        """The weight, reused across eval-mode calls while the summary is unchanged."""
        self._write_back()
        s = self.summary
        key = (s._version, s.data_ptr(), s.dtype, s.device)
        if self.searching:
            key += (self.dfs_logits._version, self.dfs_temperature)
        if self._eval_cache is None or self._eval_cache[1] != key:
            self._eval_cache = (self._gather(), key)
        return self._eval_cache[0]

    def _forward_weight(self) -> Tensor:
        """The weight a forward uses: cached in eval mode without autograd."""
        if not self.training and not (torch.is_grad_enabled()
                                      and self.summary.requires_grad):
            return self._eval_filters()
        return self.filters()

    def summary_from_dense(self, dense_weight: Tensor, name: str = 'weight') -> Tensor:
        """The least-squares summary of a dense weight of the layer's shape.

        Each summary element is the mean of the dense weights that map to it
        (:func:`~fsnet_mmdet.layers.extraction.project_filters`).

        Args:
            dense_weight: the dense layer's weight, of this layer's dense shape.
            name: the weight's name (its state-dict key), for the error.

        Raises:
            ValueError: the weight has another shape; names it and both shapes
                the layer accepts.
        """
        if tuple(dense_weight.shape) != tuple(self.index.shape):
            raise ValueError(
                f'{name}: dense weight of shape {tuple(dense_weight.shape)} fits '
                f'neither this {type(self).__name__}\'s dense shape '
                f'{tuple(self.index.shape)} nor its summary '
                f'{tuple(self.summary.shape)} ({self._layout()})')
        return project_filters(dense_weight.to(self.summary.dtype), self.index,
                               self.summary.numel()).view_as(self.summary)

    @torch.no_grad()
    def _fit_to(self, dense: nn.Module) -> None:
        """Least-squares summary of a dense layer's weight; its bias copied."""
        self.summary.copy_(self.summary_from_dense(dense.weight))
        if dense.bias is not None:
            self.bias.copy_(dense.bias)

    @torch.no_grad()
    def _bake_into(self, dense: nn.Module) -> nn.Module:
        """Write the extracted weight and the bias into a dense layer of this
        layer's shape; returns it."""
        dense.weight.copy_(self.weight)
        if self.bias is not None:
            dense.bias.copy_(self.bias)
        return dense

    def relative_error(self, dense_weight: Tensor) -> float:
        """``||W - weight|| / ||W||`` for a dense weight W of the layer's shape."""
        return relative_error(self.summary, self.index, dense_weight)

    def train(self, mode: bool = True):
        if mode:
            self._eval_cache = None  # frees the weight while training
        return super().train(mode)

    # ------------------------------------------------------------ state dict
    def _apply(self, fn, recurse=True):
        self._eval_cache = None
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        self._write_back()  # a pending init is overridden by what is loaded
        self._eval_cache = None
        key, dense_key = prefix + 'summary', prefix + 'weight'
        self._load_dfs_state(state_dict, prefix)
        if key not in state_dict and dense_key in state_dict:
            # A dense checkpoint (e.g. mmdet's model zoo via `load_from`): its
            # least-squares summary. The dict is the loader's own copy.
            dense = state_dict.pop(dense_key)
            state_dict[key] = self.summary_from_dense(dense, dense_key)
            print_log(f'{dense_key}: dense weight projected onto the FS summary '
                      f'{tuple(self.summary.shape)}, relative error '
                      f'{relative_error(state_dict[key], self.index, dense):.3f}',
                      logger='current')
        if key in state_dict and tuple(state_dict[key].shape) != tuple(
                self.summary.shape):
            raise ValueError(
                f'{key}: checkpoint summary has shape '
                f'{tuple(state_dict[key].shape)}, this {type(self).__name__} '
                f'expects {tuple(self.summary.shape)} ({self._layout()}); check '
                f'the FS options of the config against the checkpoint')
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if self.wq and key in state_dict:
            with torch.no_grad():
                self.summary.copy_(fake_quantize(self.summary))
