"""FSConv: the filter-summary convolution as a drop-in ``nn.Conv2d``."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

from .extraction import foldable
from .geometry import FSGeometry, resolve_geometry, segment_stride
from .index import filter_index, interleave_order, segment_index
from .summary import SummaryWeightMixin
from .summary_conv import (MacCount, choose_compute, filter_macs, scale_grad,
                           summary_conv2d, summary_macs)

#: Filter banks from this size on reduce their gradient by blocks
#: (:func:`fold_filter_grad`); smaller ones with one ``index_add_``, which
#: has less Python overhead. Measured on 2 CPU threads: index_add_ is faster
#: up to SSD300's 128 -> 256 3x3 layers (0.29M elements: 0.46 vs 0.50 ms),
#: the fold from its 512 -> 512 ones (2.4M: 1.6 vs 3.6 ms).
FOLD_MIN_FILTER_ELEMENTS = 2**20
#: Summary layouts: the paper's 3D block summary, or the later paper's 1D one.
LAYOUTS = ('3d', '1d')
#: How the forward computes the conv: ``'filters'`` (extract the dense bank,
#: then ``F.conv2d``), ``'summary'`` (:func:`summary_conv2d`, from the
#: summary), or ``'auto'`` (:func:`choose_compute`, per call).
COMPUTES = ('auto', 'summary', 'filters')


@MODELS.register_module('FSConv')
class FSConv(SummaryWeightMixin, nn.Conv2d):
    """2D convolution whose filters are overlapping blocks of a filter summary.

    FSNet (Yang, Jojic, Huan, ICLR 2020, Sec. 2, Algorithm 1). The layer stores
    ``summary`` of shape (Cm, Hm, Wm) instead of a (K, C, S1, S2) weight; the
    forward extracts the K filters by indexing and runs a normal convolution;
    the backward averages the filter gradients onto the summary (Eq. 2).

    The signature is ``nn.Conv2d``'s; FS options come last, as keywords. Use it
    in any MMDetection model with ``conv_cfg=dict(type='FSConv', ...)``.

    Initialization: at construction the filters get ``nn.Conv2d``'s default
    distribution; ``weight`` is a detached dense (K, C, S1, S2) bank that
    initializers (``nn.init.*_``, MMEngine's ``init_cfg``, mmcv's
    ``ConvModule``) can write into, and the writes reach the summary
    (:class:`~fsnet_mmdet.layers.summary.SummaryWeightMixin`). The
    differentiable bank is :meth:`filters`.

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
            stride there is S (docs/method.md "Geometry").
        interleave: g, dividing ``out_channels``: output channels ``k`` and
            ``k + g`` are neighbouring filters in the summary (default 1:
            ``k`` and ``k + 1``). For a detection predictor with per-anchor
            groups of g outputs (``FSSSDHead(pred_interleave=True)``).
        layout: ``'3d'`` (default): the paper's (Cm, Hm, Wm) summary of
            overlapping blocks. ``'1d'``: the later paper's 1D summary, each
            filter flattened to length N = C S1 S2 and cut as the segment of a
            vector starting at ``k * s`` (wrapping), as
            :class:`~fsnet_mmdet.layers.fslinear.FSLinear`; ``s = ceil(N / r)`` with r
            the 3D geometry's compression, so both layouts store about as
            many weights (the sampling options set r).
        dfs_radius: Differentiable FSNet (default 0: off): learn each
            filter's location among its grid location and the locations up
            to this many summary elements away along each summary axis;
            :meth:`discretize` fixes them (docs/dfsnet.md).
        dfs_prior: initial logit of each filter's grid location while
            searching (the other candidates start at 0).
        grad_reduction: ``'mean'`` (Eq. 2, default) or ``'sum'`` (plain
            indexing, as the authors' 3D-FilterMap code).
        wq: FSNet-WQ evaluation: every summary loaded from a checkpoint is
            quantized to 8 bits (:func:`fsnet_mmdet.layers.wq.fake_quantize`);
            a compressed checkpoint round-trips unchanged.
        compute: ``'auto'`` (default): per call, the path
            :func:`~fsnet_mmdet.layers.summary_conv.choose_compute` picks
            from the layer's shape, the input size and the device (the
            summary path only where benchmarks/bench_summary_conv.py
            measured it faster; on CUDA, not measured, always the filters);
            ``'filters'``: extract the filters, then a dense conv;
            ``'summary'``: the same conv computed from the summary
            (:func:`~fsnet_mmdet.layers.summary_conv.summary_conv2d`: fewer
            multiply-adds, equal up to float rounding, same gradients). A
            trace (TorchScript, FLOP counting) records the filters path in
            every mode (the same outputs). Not possible with
            ``layout='1d'`` nor for DFSNet while searching or once it moved
            filters off the grid (``offsets``): ``'auto'`` takes the filters
            there, ``'summary'`` raises. Not saved in checkpoints: a
            checkpoint computes the same outputs whichever path runs it.
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
                 layout: str = '3d',
                 dfs_radius: int = 0,
                 dfs_prior: float = 0.0,
                 grad_reduction: str = 'mean',
                 wq: bool = False,
                 compute: str = 'auto') -> None:
        if groups != 1:
            raise ValueError(f'FSConv supports groups=1 only, got groups={groups}')
        # nn.Conv2d sets up every attribute; its dense weight lives on the meta
        # device (no memory) and is replaced by the summary.
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode,
                         device='meta', dtype=dtype)
        self.geometry: FSGeometry = resolve_geometry(
            in_channels, out_channels, self.kernel_size, sampling=sampling,
            k3=k3, strides=strides, pointwise_ratio=pointwise_ratio,
            preset=preset, k3_scale=k3_scale, self_wrap=self_wrap,
            interleave=interleave)
        if layout not in LAYOUTS:
            raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
        self.layout = layout
        if compute not in COMPUTES:
            raise ValueError(f'compute must be one of {COMPUTES}, got {compute!r}')
        if compute == 'summary' and (layout != '3d' or dfs_radius):
            raise ValueError(
                f"compute='summary' needs the 3D layout of a grid summary; "
                f"this layer has layout={layout!r}, dfs_radius={dfs_radius} "
                f"(use compute='auto' or 'filters')")
        self.compute = compute
        if layout == '3d':
            shape, index = self.geometry.summary_shape, filter_index(self.geometry)
            fold = (self.geometry if foldable(self.geometry) and
                    index.numel() >= FOLD_MIN_FILTER_ELEMENTS else None)
        else:  # 1D: flattened filters are segments of a vector (FSLinear's)
            length = math.prod(self.geometry.filter_shape[1:])
            self.segment_stride = segment_stride(length, self.geometry.ratio)
            shape = (out_channels * self.segment_stride,)
            index = segment_index(out_channels, length, self.segment_stride)[
                interleave_order(out_channels, interleave)].view(
                    self.geometry.filter_shape)
            fold = None
        self._init_summary(shape, index, out_channels if bias else None,
                           grad_reduction, wq, fold, dfs_radius, dfs_prior,
                           device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (N, C, H, W) with the extracted filters, or from
        the summary (``compute``)."""
        if self.computes_from_summary(x):
            return self._summary_forward(x)
        return self._conv_forward(x, self._forward_weight(), self.bias)

    def computes_from_summary(self, x: Tensor) -> bool:
        """Whether a forward of ``x`` takes the summary path (``compute``;
        raises what that forward would raise)."""
        if self.compute == 'summary':
            blocker = self._summary_blocker()
            if blocker:
                raise RuntimeError(f"{type(self).__name__}(compute='summary') "
                                   f"cannot compute from the summary: {blocker}; "
                                   f"use compute='auto' or 'filters'")
        # A trace (FLOP counting, TorchScript) records the filters path:
        # the summary path's stage 2 is a custom autograd Function.
        if self.compute == 'filters' or torch.jit.is_tracing():
            return False
        if self.compute == 'summary':
            return True
        training = torch.is_grad_enabled() and (self.summary.requires_grad
                                                or x.requires_grad)
        return choose_compute(self.geometry, self.stride, self.dilation,
                              tuple(x.shape), x.device.type,
                              training) == 'summary' and self._summary_blocker() is None

    def path_macs(self, in_hw: Tuple[int, int],
                  out_hw: Tuple[int, int]) -> Tuple[MacCount, MacCount]:
        """Operations of one image through this layer at these sizes:
        ``(filters path, summary path)`` (:func:`filter_macs`,
        :func:`summary_macs` with the layer's stride, padding, dilation and
        padding mode)."""
        g = self.geometry
        return filter_macs(g, out_hw), summary_macs(
            g, in_hw, out_hw, self.stride, padding=self.padding,
            dilation=self.dilation, padding_mode=self.padding_mode)

    def _summary_blocker(self) -> Optional[str]:
        """Why the summary path cannot run now, or None."""
        if self.layout != '3d':
            return f'layout={self.layout!r} (only the 3D layout)'
        if self.searching:
            return 'the DFSNet search is running (dfs_radius > 0, not discretized)'
        if self._on_grid is None:  # computed once per index
            grid = filter_index(self.geometry).to(self.index.device, self.index.dtype)
            self._on_grid = torch.equal(self.index, grid)
        if not self._on_grid:
            return 'DFSNet moved filters off the grid (the offsets buffer)'
        return None

    def _set_index(self, index: Tensor, fold: Optional[FSGeometry]) -> None:
        super()._set_index(index, fold)
        self._on_grid = None  # whether index is the grid's (DFSNet may move it)

    def __setstate__(self, state: dict) -> None:
        # A layer pickled before the compute option existed: the default.
        state.setdefault('compute', 'auto')
        state.setdefault('_on_grid', None)
        super().__setstate__(state)

    def _summary_forward(self, x: Tensor) -> Tensor:
        """The conv from the summary; the summary's gradient is Eq. 2's
        sum, or its mean (``grad_reduction``) by :func:`scale_grad`."""
        self._write_back()
        summary = self.summary
        if (self.grad_reduction == 'mean' and torch.is_grad_enabled()
                and summary.requires_grad):
            summary = scale_grad(summary, self.inv_multiplicity.view_as(summary))
        return summary_conv2d(x, summary, self.geometry, self.bias, self.stride,
                              self.padding, self.dilation, self.padding_mode)

    def _layout(self) -> str:
        g = self.geometry
        if self.layout == '1d':
            return f"layout='1d', segment_stride={self.segment_stride}"
        return f'sampling={g.sampling}, strides={g.strides}'

    # ------------------------------------------------------------------ misc
    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, **fs_options) -> 'FSConv':
        """An FSConv whose filters are the least-squares fit of ``conv``'s.

        Same shapes, stride, padding, dilation and bias as ``conv``; the
        summary is :func:`~fsnet_mmdet.layers.extraction.project_filters` of its
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
        fs._fit_to(conv)
        return fs

    def to_conv2d(self) -> nn.Conv2d:
        """Bake: a plain ``nn.Conv2d`` with the extracted filters, same output."""
        return self._bake_into(nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride,
            self.padding, self.dilation, self.groups, self.bias is not None,
            self.padding_mode, device=self.summary.device,
            dtype=self.summary.dtype))

    def extra_repr(self) -> str:
        g = self.geometry
        ratio = math.prod(g.filter_shape) / self.summary.numel()
        return (f'{super().extra_repr()}, {self._layout()}, '
                f'summary={tuple(self.summary.shape)}, ratio={ratio:.2f}, '
                f'grad_reduction={self.grad_reduction}'
                + (f', interleave={g.interleave}' if g.interleave > 1 else '')
                + self._dfs_repr() + (', wq=True' if self.wq else '')
                + (f', compute={self.compute}' if self.compute != 'auto' else ''))
