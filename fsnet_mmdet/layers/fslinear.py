"""FSLinear: a linear layer whose rows are overlapping segments of a 1D summary."""
from __future__ import annotations

import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from .geometry import DEFAULT_SEGMENT_RATIO, segment_stride
from .index import interleave_order, segment_index
from .summary import SummaryWeightMixin


@MODELS.register_module('FSLinear')
class FSLinear(SummaryWeightMixin, nn.Linear):
    """``nn.Linear`` whose weight rows are cut from one 1D filter summary.

    The 1D filter summary of the later FSNet paper: the layer stores a vector
    ``summary`` of length ``L = out_features * s``; row k of the
    (out_features, in_features) weight is the segment of length
    ``in_features`` starting at ``k * s``, read with circular wrap-around
    (:func:`~fsnet_mmdet.layers.index.segment_index`), so neighbouring rows
    share ``in_features - s`` weights. Compression ``in_features / s``;
    backward per Eq. 2 (each summary element gets the mean of the gradients
    of the weight elements that read it; ``grad_reduction='sum'``: their sum).

    The signature is ``nn.Linear``'s; FS options come last, as keywords. In
    MMDetection, wherever a linear layer is built from a config (e.g. a bbox
    head's ``cls_predictor_cfg=dict(type='FSLinear')``). Initialization as
    :class:`~fsnet_mmdet.layers.fsconv.FSConv`: ``nn.Linear``'s default
    distribution, and writes into ``weight`` reach the summary.

    Args:
        in_features, out_features, bias, device, dtype: as ``nn.Linear``.
        ratio: compression ``in_features / s`` (default 8, as a 1x1 FSConv);
            ``s = ceil(in_features / ratio)``.
        stride: s, an explicit offset between rows (1 <= s <= in_features)
            instead of ``ratio``.
        interleave: g, dividing ``out_features``: rows ``k`` and ``k + g``
            are neighbouring segments of the summary (default 1: ``k`` and
            ``k + 1``); for a predictor whose outputs come in groups of g (a
            class-specific box regressor's 4 deltas per class).
        dfs_radius: Differentiable FSNet (default 0: off): learn each row's
            segment start among its grid start and the starts up to this many
            elements away (as :class:`~fsnet_mmdet.layers.fsconv.FSConv`).
        dfs_prior: initial logit of each row's grid start while searching.
        grad_reduction: ``'mean'`` (Eq. 2, default) or ``'sum'``.
        wq: FSNet-WQ evaluation: every summary loaded from a checkpoint is
            quantized to 8 bits.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 device=None,
                 dtype=None,
                 *,
                 ratio: float = DEFAULT_SEGMENT_RATIO,
                 stride: int | None = None,
                 interleave: int = 1,
                 dfs_radius: int = 0,
                 dfs_prior: float = 0.0,
                 grad_reduction: str = 'mean',
                 wq: bool = False) -> None:
        self.stride = segment_stride(in_features, ratio, stride)
        if (not isinstance(interleave, int) or interleave < 1
                or out_features % interleave):
            raise ValueError(f'interleave must be a positive integer dividing '
                             f'out_features={out_features}, got {interleave!r}')
        self.interleave = interleave
        super().__init__(in_features, out_features, bias, device='meta',
                         dtype=dtype)
        self._init_summary((out_features * self.stride,),
                           segment_index(out_features, in_features, self.stride)[
                               interleave_order(out_features, interleave)],
                           out_features if bias else None, grad_reduction, wq,
                           dfs_radius=dfs_radius, dfs_prior=dfs_prior,
                           device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (..., in_features) -> (..., out_features)."""
        return F.linear(x, self._forward_weight(), self.bias)

    def _layout(self) -> str:
        return f'stride={self.stride}'

    @property
    def ratio(self) -> float:
        """Compression of the weight: ``in_features / stride``."""
        return self.in_features / self.stride

    @classmethod
    def from_linear(cls, linear: nn.Linear, **fs_options) -> 'FSLinear':
        """An FSLinear whose weight is the least-squares fit of ``linear``'s.

        Each summary element is the mean of the dense weights that map to it
        (:func:`~fsnet_mmdet.layers.extraction.project_filters`); the bias is copied.
        """
        fs = cls(linear.in_features, linear.out_features,
                 linear.bias is not None, device=linear.weight.device,
                 dtype=linear.weight.dtype, **fs_options)
        fs._fit_to(linear)
        return fs

    def to_linear(self) -> nn.Linear:
        """Bake: a plain ``nn.Linear`` with the extracted weight, same output."""
        return self._bake_into(nn.Linear(
            self.in_features, self.out_features, self.bias is not None,
            device=self.summary.device, dtype=self.summary.dtype))

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, stride={self.stride}, '
                f'summary={tuple(self.summary.shape)}, ratio={self.ratio:.2f}, '
                f'grad_reduction={self.grad_reduction}'
                + (f', interleave={self.interleave}' if self.interleave > 1
                   else '')
                + self._dfs_repr() + (', wq=True' if self.wq else ''))
