"""FSNet filter-summary convolutions for MMDetection.

Importing this package registers every module it defines (``FSConv``,
``FSLinear`` and ``BSFConv`` in MMEngine's root ``MODELS``; ``FSSSD300``,
``FSSSDHead``, ``CheckedVOCDataset``, ``FiniteLossHook``, ``DFSSearchHook``,
``FSRegularizationHook`` and ``FSDistillationHook`` in MMDetection's
registries; ``BF16OptimWrapper`` in MMEngine's ``OPTIM_WRAPPERS``;
``KSEConv`` and the ``compression`` model key of
:mod:`fsnet_mmdet.compression`),
applies the compatibility fixes of :mod:`fsnet_mmdet.compat` and lets a model
config's ``fs_convert`` key convert any detector (:mod:`fsnet_mmdet.conversion`).
"""
from .compression.bsf import BSFConv
from .compat import apply_patches, load_checkpoint_file
from .conversion import convert_to_fs, install_build_hook
from .datasets import CheckedVOCDataset
from .distillation import FSDistillationHook
from .layers.fsconv import FSConv, LayerParams, ModelParams, count_params, layer_params
from .layers.fslinear import FSLinear
from .hooks import DFSSearchHook, FiniteLossHook
from .models import FSSSD300, FSSSDHead
from .optim import BF16OptimWrapper
from .regularization import FSRegularizationHook

apply_patches()
install_build_hook()
# KSEConv and the ``compression`` config key (KSE / LRF, tools/compress.py).
from . import compression  # noqa: E402,F401

__version__ = '0.1.0'
__all__ = [
    'BF16OptimWrapper', 'BSFConv', 'CheckedVOCDataset', 'DFSSearchHook',
    'FSConv', 'FSDistillationHook', 'FSLinear', 'FSRegularizationHook',
    'FSSSD300', 'FSSSDHead', 'FiniteLossHook', 'LayerParams', 'ModelParams',
    'convert_to_fs', 'count_params', 'layer_params', 'load_checkpoint_file'
]
