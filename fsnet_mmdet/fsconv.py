"""FSConv: the filter-summary convolution as a drop-in ``nn.Conv2d``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

from .functional import (GRAD_REDUCTIONS, FSGeometry, extract_filters,
                         filter_index, foldable, multiplicity, project_filters,
                         representatives, resolve_geometry)

#: Filter banks from this size on reduce their gradient by blocks
#: (:func:`fold_filter_grad`); smaller ones with one ``index_add_``, which
#: has less Python overhead (benchmarks/bench_fsconv.py).
FOLD_MIN_FILTER_ELEMENTS = 2**16
from .quantization import fake_quantize


@MODELS.register_module('FSConv')
class FSConv(nn.Conv2d):
    """2D convolution whose filters are overlapping blocks of a filter summary.

    FSNet (Yang, Jojic, Huan, ICLR 2020, Sec. 2, Algorithm 1). The layer stores
    ``summary`` of shape (Cm, Hm, Wm) instead of a (K, C, S1, S2) weight; the
    forward extracts the K filters by indexing and runs a normal convolution;
    the backward averages the filter gradients onto the summary (Eq. 2).

    The signature is ``nn.Conv2d``'s; FS options come last, as keywords. Use it
    in any MMDetection model with ``conv_cfg=dict(type='FSConv', ...)``.

    Initialization: at construction the filters get ``nn.Conv2d``'s default
    distribution. ``weight`` returns a dense (K, C, S1, S2) materialization of
    the filters; an in-place write to it (``nn.init.*_``, MMEngine's
    ``init_cfg`` initializers, mmcv ``ConvModule``'s kaiming init) is written
    back onto the summary as soon as any parameter, buffer or ``weight`` of the
    layer is read again (initializers read ``bias`` next), and before forward,
    ``state_dict`` and ``load_state_dict``, taking for each summary element the
    value drawn for the first filter element that reads it. The extracted
    filters therefore have exactly the distribution the initializer would give
    a dense layer. ``weight`` is detached; the differentiable bank is
    :meth:`filters`.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
        groups, bias, padding_mode, device, dtype: as ``nn.Conv2d``;
            ``groups`` must be 1.
        sampling: (K1, K2, K3) sampling numbers, product ``out_channels``.
        k3: channel sampling number only (K1 x K2 factored squarely).
        strides: (x, y, z) sampling strides in the summary.
        pointwise_ratio: compression ratio of a 1x1 layer (default 8).
        preset: K3 table by number of filters: ``'paper'`` (Table 1, default),
            ``'fsnet1'`` or ``'fsnet2'`` (the SSD300 presets).
        k3_scale: multiplies the preset's K3 of spatial kernels (2.0 about
            doubles their compression, 0.5 halves it; Eq. 1).
        self_wrap: along a spatial axis with a single filter (K1 = 1 or
            K2 = 1) keep the stride ``ceil(S / 2)``, which wraps the filter
            onto itself (its first and last rows equal); default False: the
            stride there is S (README "Geometry").
        interleave: g, dividing ``out_channels``: output channels ``k`` and
            ``k + g`` are neighbouring filters in the summary (default 1:
            ``k`` and ``k + 1``). For a detection predictor with per-anchor
            groups of g outputs (``FSSSDHead(pred_interleave=True)``).
        grad_reduction: ``'mean'`` (Eq. 2, default) or ``'sum'`` (plain
            indexing, as the authors' 3D-FilterMap code).
        wq: FSNet-WQ evaluation: every summary loaded from a checkpoint is
            quantized to 8 bits (:func:`fsnet_mmdet.quantization.fake_quantize`);
            a compressed checkpoint round-trips unchanged.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size,
                 stride=1,
                 padding=0,
                 dilation=1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 device=None,
                 dtype=None,
                 *,
                 sampling: Optional[Sequence[int]] = None,
                 k3: Optional[int] = None,
                 strides: Optional[Sequence[int]] = None,
                 pointwise_ratio: Optional[int] = None,
                 preset: str = 'paper',
                 k3_scale: float = 1.0,
                 self_wrap: bool = False,
                 interleave: int = 1,
                 grad_reduction: str = 'mean',
                 wq: bool = False) -> None:
        if groups != 1:
            raise ValueError(f'FSConv supports groups=1 only, got groups={groups}')
        if grad_reduction not in GRAD_REDUCTIONS:
            raise ValueError(f'grad_reduction must be one of {GRAD_REDUCTIONS}, '
                             f'got {grad_reduction!r}')
        # nn.Conv2d sets up every attribute; its dense weight lives on the meta
        # device (no memory) and is replaced by the summary below.
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode,
                         device='meta', dtype=dtype)
        del self._parameters['weight']
        self.geometry: FSGeometry = resolve_geometry(
            in_channels, out_channels, self.kernel_size, sampling=sampling,
            k3=k3, strides=strides, pointwise_ratio=pointwise_ratio,
            preset=preset, k3_scale=k3_scale, self_wrap=self_wrap,
            interleave=interleave)
        self.grad_reduction = grad_reduction
        self.wq = bool(wq)
        factory = dict(device=device, dtype=dtype)
        self.summary = nn.Parameter(
            torch.empty(self.geometry.summary_shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        index = filter_index(self.geometry).to(device)
        count = multiplicity(index, self.summary.numel())
        # Derived from the geometry: never saved in a checkpoint.
        self.register_buffer('index', index, persistent=False)
        self.register_buffer('inv_multiplicity',
                             1.0 / count.to(self.summary.dtype),
                             persistent=False)
        self._fold = (self.geometry if foldable(self.geometry) and
                      index.numel() >= FOLD_MIN_FILTER_ELEMENTS else None)
        self._dense = None  # (tensor, version) handed out by `weight`
        self._eval_cache = None  # (filters, summary key) in eval mode
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s default init, applied to the extracted filters."""
        if 'summary' not in self._parameters:
            return  # called from nn.Conv2d.__init__ before the summary exists
        super().reset_parameters()  # writes self.weight in place
        self._write_back()

    @property
    def weight(self) -> Tensor:
        """Dense (K, C, S1, S2) filters, detached; in-place writes reach the summary."""
        self._write_back()
        dense = self._gather()
        self._dense = (dense, dense._version)
        return dense

    def __getattr__(self, name: str):
        # nn.Module serves parameters, buffers and submodules from here. A
        # pending write to `weight` is applied first, so every reader sees it:
        # MMEngine's initializers read `bias` right after writing `weight`.
        if self.__dict__.get('_dense') is not None:
            self._write_back()
        return super().__getattr__(name)

    def _write_back(self) -> None:
        """Copy in-place writes to the last ``weight`` onto the summary."""
        if self._dense is None:
            return
        dense, version = self._dense
        self._dense = None
        if dense._version != version:
            rep = representatives(self.index, self.summary.numel())
            with torch.no_grad():
                self.summary.copy_(dense.reshape(-1)[rep].view_as(self.summary))

    # --------------------------------------------------------------- forward
    def filters(self) -> Tensor:
        """The (K, C, S1, S2) filter bank, differentiable w.r.t. the summary."""
        self._write_back()
        inv = self.inv_multiplicity if self.grad_reduction == 'mean' else None
        return extract_filters(self.summary, self.index, inv, self._fold)

    @torch.no_grad()
    def _gather(self) -> Tensor:
        """The (K, C, S1, S2) filters, detached, from the current summary."""
        return self.summary.reshape(-1).index_select(
            0, self.index.reshape(-1)).view(self.index.shape)

    def _eval_filters(self) -> Tensor:
        """Filters reused across eval-mode calls while the summary is unchanged."""
        self._write_back()
        s = self.summary
        key = (s._version, s.data_ptr(), s.dtype, s.device)
        if self._eval_cache is None or self._eval_cache[1] != key:
            self._eval_cache = (self._gather(), key)
        return self._eval_cache[0]

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (N, C, H, W) with the extracted filters."""
        if not self.training and not (torch.is_grad_enabled()
                                      and self.summary.requires_grad):
            weight = self._eval_filters()
        else:
            weight = self.filters()
        return self._conv_forward(x, weight, self.bias)

    def train(self, mode: bool = True) -> 'FSConv':
        if mode:
            self._eval_cache = None  # frees the filters while training
        return super().train(mode)

    # ------------------------------------------------------------ state dict
    def _apply(self, fn, recurse=True):
        self._write_back()
        self._eval_cache = None
        return super()._apply(fn, recurse)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self._write_back()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        self._write_back()  # a pending init is overridden by what is loaded
        self._eval_cache = None
        key = prefix + 'summary'
        if key in state_dict and tuple(state_dict[key].shape) != tuple(
                self.summary.shape):
            raise ValueError(
                f'{key}: checkpoint summary has shape '
                f'{tuple(state_dict[key].shape)}, this FSConv expects '
                f'{tuple(self.summary.shape)} (sampling={self.geometry.sampling}, '
                f'strides={self.geometry.strides}); check the FS options of the '
                f'config against the checkpoint')
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if self.wq and key in state_dict:
            with torch.no_grad():
                self.summary.copy_(fake_quantize(self.summary))

    # ------------------------------------------------------------------ misc
    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, **fs_options) -> 'FSConv':
        """An FSConv whose filters are the least-squares fit of ``conv``'s.

        Same shapes, stride, padding, dilation and bias as ``conv``; the
        summary is :func:`~fsnet_mmdet.functional.project_filters` of its
        weight. ``relative_error(conv.weight)`` tells how close it came.

        Args:
            conv: a dense ``nn.Conv2d`` with ``groups=1``.
            **fs_options: FSConv's keyword options (sampling, k3, preset, ...).
        """
        fs = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                 conv.stride, conv.padding, conv.dilation, conv.groups,
                 conv.bias is not None, conv.padding_mode,
                 device=conv.weight.device, dtype=conv.weight.dtype,
                 **fs_options)
        with torch.no_grad():
            fs.summary.copy_(project_filters(
                conv.weight, fs.index, fs.summary.numel()).view_as(fs.summary))
            if conv.bias is not None:
                fs.bias.copy_(conv.bias)
        return fs

    def relative_error(self, dense_weight: Tensor) -> float:
        """``||W - filters|| / ||W||`` for a dense (K, C, S1, S2) weight W."""
        dense_weight = dense_weight.detach()
        return float((self._gather() - dense_weight).norm() /
                     dense_weight.norm())

    def to_conv2d(self) -> nn.Conv2d:
        """Bake: a plain ``nn.Conv2d`` with the extracted filters, same output."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                         self.stride, self.padding, self.dilation, self.groups,
                         self.bias is not None, self.padding_mode,
                         device=self.summary.device, dtype=self.summary.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        g = self.geometry
        return (f'{super().extra_repr()}, sampling={g.sampling}, '
                f'strides={g.strides}, summary={g.summary_shape}, '
                f'ratio={g.ratio:.2f}, grad_reduction={self.grad_reduction}'
                + (f', interleave={g.interleave}' if g.interleave > 1 else '')
                + (', wq=True' if self.wq else ''))


# ----------------------------------------------------------------- accounting
@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a layer or a model.

    Attributes:
        dense: parameters with every FSConv made dense (weight + bias).
        stored: parameters actually stored (summary + bias for FSConv).
        summary: summary elements (0 for dense convs); the part WQ quantizes.
    """

    dense: int
    stored: int
    summary: int

    @property
    def ratio(self) -> float:
        return self.dense / self.stored

    @property
    def effective_wq(self) -> float:
        """Effective parameters with 8-bit summaries (a byte counts 1/4)."""
        return self.stored - self.summary + self.summary / 4


@dataclass(frozen=True)
class LayerParams(ParamCounts):
    """Parameter counts of one conv layer, named as in the model."""

    name: str = ''


@dataclass(frozen=True)
class ModelParams(ParamCounts):
    """Parameter counts of a model; non-conv parameters count in both totals."""

    layers: List[LayerParams] = field(default_factory=list)


def layer_params(name: str, conv: nn.Conv2d) -> LayerParams:
    """Parameter count of one ``nn.Conv2d`` or :class:`FSConv`."""
    bias = conv.bias.numel() if conv.bias is not None else 0
    dense = (conv.out_channels * conv.in_channels // conv.groups *
             math.prod(conv.kernel_size) + bias)
    if isinstance(conv, FSConv):
        return LayerParams(dense, conv.summary.numel() + bias,
                           conv.summary.numel(), name=name)
    return LayerParams(dense, dense, 0, name=name)


def count_params(model: nn.Module) -> ModelParams:
    """Dense-equivalent, stored and summary parameter counts of a model.

    Non-conv parameters (BN, linear, ...) count the same in both totals.
    """
    layers = [layer_params(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.Conv2d)]
    stored = sum(p.numel() for p in model.parameters())
    saved = sum(layer.dense - layer.stored for layer in layers)
    return ModelParams(stored + saved, stored,
                       sum(layer.summary for layer in layers), layers=layers)
