"""FSNet filter-summary convolutions for MMDetection.

Importing this package registers every module it defines (``FSConv`` and
``FSLinear`` in MMEngine's root ``MODELS``; ``FSSSD300``, ``FSSSDHead``,
``CheckedVOCDataset`` and ``FiniteLossHook`` in MMDetection's registries) and
applies the compatibility fixes of :mod:`fsnet_mmdet.compat`.
"""
from .compat import apply_patches, load_checkpoint_file
from .datasets import CheckedVOCDataset
from .fsconv import FSConv, LayerParams, ModelParams, count_params, layer_params
from .fslinear import FSLinear
from .hooks import FiniteLossHook
from .models import FSSSD300, FSSSDHead

apply_patches()

__version__ = '0.1.0'
__all__ = [
    'CheckedVOCDataset', 'FSConv', 'FSLinear', 'FSSSD300', 'FSSSDHead', 'FiniteLossHook',
    'LayerParams', 'ModelParams', 'count_params', 'layer_params',
    'load_checkpoint_file'
]
