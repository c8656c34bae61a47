"""The FS layer family: geometry and index (:mod:`.functional`), the derived
weight mechanism and the summary layer with its Eq. 2 backward, FSConv,
FSLinear, and the 8-bit weight quantization of a summary (:mod:`.wq`)."""
from .fsconv import FSConv, LayerParams, ModelParams, count_params, layer_params
from .fslinear import FSLinear
from .summary import SummaryWeightMixin

__all__ = ['FSConv', 'FSLinear', 'SummaryWeightMixin', 'LayerParams',
           'ModelParams', 'count_params', 'layer_params']
