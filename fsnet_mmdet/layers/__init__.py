"""THE layer, one family: a summary in place of the weight.

* :mod:`.geometry`: sampling numbers, strides, the paper's and our presets.
* :mod:`.index`: which summary element each weight element reads.
* :mod:`.extraction`: filters from the summary (Eq. 2 backward) and back
  (least-squares projection).
* :mod:`.derived_weight`, :mod:`.summary`: a ``weight`` derived from other
  tensors; what every summary layer shares.
* :mod:`.dfs`: DFSNet's learned filter locations.
* :mod:`.fsconv`, :mod:`.fslinear`: the layers.
* :mod:`.summary_conv`: an FS conv computed from its summary (fewer
  multiply-adds; ``FSConv(compute=...)``).
* :mod:`.accounting`: what every layer type stores (parameters, bits).
* :mod:`.wq`: 8-bit summaries and their compressed checkpoint format.
"""
from .accounting import (LayerParams, ModelParams, Storage, StoredLayer,
                         count_params, layer_params)
from .dfs import DFSMixin
from .fsconv import FSConv
from .fslinear import FSLinear
from .summary import SummaryWeightMixin

__all__ = ['DFSMixin', 'FSConv', 'FSLinear', 'LayerParams', 'ModelParams',
           'Storage', 'StoredLayer', 'SummaryWeightMixin', 'count_params',
           'layer_params']
